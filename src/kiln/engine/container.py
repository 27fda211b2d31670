"""``kiln run``: an image's process in a throwaway container, isolated as RUN steps are."""

from __future__ import annotations

from collections.abc import Callable

from kiln.dockerfile.config import from_oci
from kiln.engine.network import DEFAULT, PrivateNetwork
from kiln.engine.runtime import ProcessSpec, run
from kiln.engine.snapshots import Snapshots
from kiln.engine.snapshotter import mounted, snapshotter
from kiln.engine.workspace import reclaim, workspace
from kiln.errors import KilnError
from kiln.store import Store


def run_image(
    store: Store,
    name: str,
    command: list[str],
    network: str,
    output: Callable[[bytes], None],
    isolation: str | None = None,
) -> int:
    """Run ``command`` (or the image's entrypoint + cmd); returns the exit status."""
    image = store.image(name)
    config = from_oci(image.config.get("config") or {})
    args = [*(config.entrypoint or ()), *(command or config.cmd or ())]
    if not args:
        raise KilnError(f"{name}: no command given and the image has no CMD or ENTRYPOINT")
    reclaim(store.root)
    snapshots = Snapshots(store)
    lowers = snapshots.lowers([layer.digest for layer in image.layers])
    with workspace(store.root, "run") as scratch:
        upper, work, merged = (scratch.path / name for name in ("upper", "work", "merged"))
        for path in (upper, work, merged):
            path.mkdir(mode=0o755)
        private = PrivateNetwork(scratch.path)
        try:
            with mounted(lowers, upper, work, merged, kind=snapshotter(store.root / "work")):
                netns = str(private.namespace()) if network == DEFAULT else ""
                spec = ProcessSpec(
                    args, config.env, config.working_dir or "/", config.user, network, netns
                )
                return run(merged, spec, scratch.private() / "bundle-run", output, isolation)
        finally:
            private.close()
