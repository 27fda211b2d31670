"""kiln's embedded image store: OCI layout blobs, SQLite index, locking; squashing layers."""

from kiln.store.squash import SquashError, merge_layers, squash
from kiln.store.store import Store, StoredImage, StoreError

__all__ = ["SquashError", "Store", "StoreError", "StoredImage", "merge_layers", "squash"]
