"""The native build engine: snapshots, overlay mounts, an OCI runtime, and the executor."""
