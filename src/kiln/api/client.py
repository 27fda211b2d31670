"""The client object scripts start from, as ``docker.from_env()``."""

from __future__ import annotations

from pathlib import Path

from kiln.api.images import ImageCollection, NotSupported
from kiln.store import Store


class Client:
    """kiln's images, through docker-py's shapes. ``backend="native"`` (the default) works on
    kiln's own store (``root``, default ``$KILN_ROOT``); the Docker engine backend is not
    part of this version."""

    def __init__(self, backend: str = "native", *, root: Path | None = None) -> None:
        if backend != "native":
            raise NotSupported(f"Client: the {backend!r} backend is not available yet")
        self.store = Store(root)
        self.images = ImageCollection(self.store)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
