"""The Docker engine backend of ``kiln.api.Client``: docker-py underneath, kiln's context.

Builds send a context tar kiln makes itself, with kiln's own .dockerignore matcher (Docker's
semantics, where docker-py's own tar has deviated), and read the engine's JSON stream into
the same ``(image, logs)`` and ``BuildError`` the native backend gives. Everything else is
docker-py's ``ImageCollection``, whose ``Image`` objects have the same attributes as kiln's.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from kiln.api.errors import BuildError, ImageNotFound
from kiln.api.images import NotSupported
from kiln.context import load_ignore, scan_context


class DockerImageCollection:
    """``client.images`` over a Docker engine."""

    def __init__(self, engine: docker.DockerClient) -> None:
        self.engine = engine

    def build(self, **kwargs: Any) -> tuple[Any, Iterator[dict[str, Any]]]:
        """docker-py's ``images.build``; a ``path`` context is sent as kiln's own tar.
        ``output`` (kiln's own keyword) gets each log line as the engine sends it."""
        output: Callable[[str], None] | None = kwargs.pop("output", None)
        path = kwargs.pop("path", None)
        if path is not None and kwargs.get("fileobj") is None:
            dockerfile = kwargs.get("dockerfile") or "Dockerfile"
            kwargs["fileobj"] = context_tar(Path(path), dockerfile)
            kwargs["custom_context"] = True
            kwargs["encoding"] = None
        elif path is not None:
            raise NotSupported("build: give path or fileobj, not both")
        log: list[dict[str, Any]] = []
        image_id = ""
        try:
            for entry in self.engine.api.build(decode=True, rm=kwargs.pop("rm", True), **kwargs):
                log.append(entry)
                if "error" in entry:
                    raise BuildError(str(entry["error"]).strip(), log)
                aux = entry.get("aux") or {}
                image_id = aux.get("ID", image_id)
                stream = str(entry.get("stream", "")).strip()
                if output is not None and stream:
                    output(stream)
                if stream.startswith("Successfully built "):
                    image_id = image_id or stream.split()[-1]
                elif stream.startswith("sha256:") and " " not in stream:  # quiet: the ID alone
                    image_id = image_id or stream
        except docker.errors.APIError as err:
            raise BuildError(str(err.explanation or err), log) from None
        if not image_id:
            raise BuildError("the engine's build stream named no image", log)
        return self.engine.images.get(image_id), iter(log)

    def get(self, name: str) -> Any:
        try:
            return self.engine.images.get(name)
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"no such image: {name}") from None

    def __getattr__(self, name: str) -> Any:
        """list, load, pull, push, remove, prune, get_registry_data: docker-py's own."""
        return getattr(self.engine.images, name)


def context_tar(root: Path, dockerfile: str = "Dockerfile") -> IO[bytes]:
    """The build context as the docker CLI sends it: what .dockerignore lets through (with
    Docker's pattern semantics), plus the Dockerfile and .dockerignore themselves, which the
    CLI always sends. Entries in path order, owners kept, mtimes as they are."""
    root = root.resolve()
    ignore = load_ignore(root, root / dockerfile)
    snapshot = scan_context(root, ignore.matcher if ignore else None)
    names = [entry.path for entry in snapshot]
    for always in (dockerfile, ".dockerignore"):
        if (root / always).is_file() and always not in names:
            names.append(always)
    archive = tempfile.TemporaryFile()  # noqa: SIM115 (the caller's to close)
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names):
            path = root / name
            info = tar.gettarinfo(str(path), arcname=name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    archive.seek(0)
    return archive
