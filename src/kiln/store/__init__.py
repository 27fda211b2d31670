"""kiln's embedded image store: OCI layout blobs, SQLite index, locking."""

from kiln.store.store import Store, StoredImage, StoreError

__all__ = ["Store", "StoreError", "StoredImage"]
