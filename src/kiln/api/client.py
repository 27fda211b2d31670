"""The client object scripts start from, as ``docker.from_env()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.api.images import ImageCollection, NotSupported
from kiln.store import Store


class Client:
    """kiln's images through docker-py's shapes.

    ``backend="native"`` (the default) works on kiln's own store (``root``, default
    ``$KILN_ROOT``); ``backend="docker"`` on a Docker engine (``base_url``, else
    ``DOCKER_HOST`` and docker-py's other environment), with kiln's own build contexts.
    """

    images: Any  # ImageCollection, or DockerImageCollection

    def __init__(
        self, backend: str = "native", *, root: Path | None = None, base_url: str | None = None
    ) -> None:
        self.backend = backend
        if backend == "native":
            self.store: Store | None = Store(root)
            self.images = ImageCollection(self.store)
        elif backend == "docker":
            import docker

            from kiln.api.docker_backend import DockerImageCollection

            self.store = None
            self.engine = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            self.images = DockerImageCollection(self.engine)
        else:
            raise NotSupported(f"Client: unknown backend {backend!r} (native or docker)")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        else:
            self.engine.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
