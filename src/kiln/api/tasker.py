"""The image tasker of atomic-reactor and dock, on a Docker engine (docker-py's APIClient).

Scripts written against ``DockerTasker`` keep their calls; image names may be kiln's
``Reference`` or strings. Builds send kiln's own context tar (Docker's .dockerignore rules).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

from kiln.api.docker_backend import context_tar
from kiln.api.errors import BuildError
from kiln.errors import KilnError
from kiln.reference import Reference

ImageName = Reference | str


class TaskerError(KilnError):
    """An engine operation that failed, with the engine's explanation."""


class ImageTasker:
    """Image and container operations on a Docker engine (``base_url``, else DOCKER_HOST)."""

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        kwargs: dict[str, Any] = {"timeout": timeout}
        if base_url:
            kwargs["base_url"] = base_url
        self.client = docker.APIClient(**kwargs) if base_url else docker.from_env(**kwargs).api

    # -- building

    def build_image_from_path(
        self, path: str | Path, image: ImageName, stream: bool = False, use_cache: bool = False,
        remove_im: bool = True,
    ) -> Iterator[str] | list[str]:  # fmt: skip
        """Build ``path`` as ``image``; the build's log lines (a generator with ``stream``)."""
        lines = self._build(Path(path), str(image), use_cache, remove_im)
        return lines if stream else list(lines)

    def build_image_from_git(
        self, url: str, image: ImageName, git_path: str | None = None,
        git_commit: str | None = None, copy_dockerfile_to: str | None = None,
        stream: bool = False, use_cache: bool = False,
    ) -> Iterator[str] | list[str]:  # fmt: skip
        """Clone ``url`` (at ``git_commit``), build ``git_path`` in it as ``image``."""
        with tempfile.TemporaryDirectory(prefix="kiln-git-") as scratch:
            checkout = Path(scratch) / "source"
            _git("clone", "--quiet", url, str(checkout))
            if git_commit:
                _git("-C", str(checkout), "checkout", "--quiet", git_commit)
            context = checkout / git_path if git_path else checkout
            if copy_dockerfile_to:
                Path(copy_dockerfile_to).write_bytes((context / "Dockerfile").read_bytes())
            return list(self._build(context, str(image), use_cache, True))  # before cleanup

    def _build(self, context: Path, image: str, use_cache: bool, remove: bool) -> Iterator[str]:
        log: list[dict[str, Any]] = []
        for entry in self.client.build(
            fileobj=context_tar(context), custom_context=True, tag=image, rm=remove,
            nocache=not use_cache, decode=True,
        ):  # fmt: skip
            log.append(entry)
            if "error" in entry:
                raise BuildError(str(entry["error"]).strip(), log)
            if entry.get("stream"):
                yield str(entry["stream"])

    def commit_container(
        self, container_id: str, image: ImageName | None = None, message: str | None = None
    ) -> str:
        """A new image from a container; its ID."""
        repository, tag = _split(image) if image else (None, None)
        answer = self.client.commit(container_id, repository=repository, tag=tag, message=message)
        return str(answer["Id"])

    # -- images

    def get_image_info_by_image_id(self, image_id: str) -> dict[str, Any] | None:
        for info in self.client.images():
            if info["Id"] == image_id or info["Id"].removeprefix("sha256:").startswith(
                image_id.removeprefix("sha256:")
            ):
                return dict(info)
        return None

    def get_image_info_by_image_name(
        self, image: ImageName, exact_tag: bool = True
    ) -> list[dict[str, Any]]:
        """Images named ``image``: with its tag exactly, or (not ``exact_tag``) any tag."""
        reference = Reference.parse(str(image))
        found = []
        for info in self.client.images():
            for tag in info.get("RepoTags") or []:
                if tag == "<none>:<none>":  # the engine's way of saying "untagged"
                    continue
                candidate = Reference.parse(tag)
                if candidate.name == reference.name and (
                    not exact_tag or candidate.tag == reference.tag
                ):
                    found.append(dict(info))
                    break
        return found

    def image_exists(self, image_id: ImageName) -> bool:
        try:
            self.client.inspect_image(str(image_id))  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            return False
        return True

    def inspect_image(self, image_id: ImageName) -> dict[str, Any]:
        return dict(self.client.inspect_image(str(image_id)))  # type: ignore[no-untyped-call]

    def tag_image(self, image: ImageName, target_image: ImageName, force: bool = False) -> str:
        """Tag ``image`` as ``target_image``; the target's name."""
        repository, tag = _split(target_image)
        if not self.client.tag(str(image), repository, tag, force=force):
            raise TaskerError(f"could not tag {image} as {target_image}")
        return str(target_image)

    def remove_image(self, image_id: ImageName, force: bool = False, noprune: bool = False) -> None:
        self.client.remove_image(str(image_id), force=force, noprune=noprune)

    # -- registries

    def login(self, registry: str, docker_secret_path: str) -> None:
        """Log the engine in with the credentials of a .dockercfg or .dockerconfigjson
        secret in ``docker_secret_path`` (as OpenShift mounts them)."""
        directory = Path(docker_secret_path)
        for name in (".dockerconfigjson", ".dockercfg"):
            if (directory / name).is_file():
                data = json.loads((directory / name).read_text())
                break
        else:
            raise TaskerError(f"{directory}: no .dockerconfigjson or .dockercfg")
        auths = data.get("auths", data)
        entry = auths.get(registry) or auths.get(f"https://{registry}") or {}
        if "username" not in entry and "auth" in entry:
            import base64

            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            entry = {"username": username, "password": password}
        if "username" not in entry:
            raise TaskerError(f"{directory}: no credentials for {registry}")
        self.client.login(entry["username"], entry.get("password"), registry=registry, reauth=True)

    def pull_image(self, image: ImageName, insecure: bool = False) -> str:
        """Pull ``image``; its name. (Insecure registries are the engine's to allow.)"""
        repository, tag = _split(image)
        for entry in self.client.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in entry:
                raise TaskerError(f"pulling {image}: {entry['error']}")
        return str(image)

    def push_image(self, image: ImageName, insecure: bool = False) -> list[str]:
        """Push ``image``; the engine's log lines."""
        repository, tag = _split(image)
        lines = []
        for entry in self.client.push(repository, tag=tag, stream=True, decode=True):
            if "error" in entry:
                raise TaskerError(f"pushing {image}: {entry['error']}")
            lines.append(json.dumps(entry))
        return lines

    def tag_and_push_image(
        self, image: ImageName, target_image: ImageName, insecure: bool = False,
        force: bool = False,
    ) -> list[str]:  # fmt: skip
        self.tag_image(image, target_image, force=force)
        return self.push_image(target_image, insecure=insecure)

    # -- containers

    def run(
        self, image: ImageName, command: str | list[str] | None = None,
        create_kwargs: dict[str, Any] | None = None, start_kwargs: dict[str, Any] | None = None,
    ) -> str:  # fmt: skip
        """Create and start a container of ``image``; its ID."""
        container = self.client.create_container(str(image), command=command,
                                                 **(create_kwargs or {}))  # fmt: skip
        self.client.start(container["Id"], **(start_kwargs or {}))
        return str(container["Id"])

    def wait(self, container_id: str) -> int:
        """Wait for the container to end; its exit code."""
        return int(self.client.wait(container_id)["StatusCode"])

    def logs(
        self, container_id: str, stderr: bool = True, stream: bool = True
    ) -> Iterator[str] | list[str]:
        """The container's output lines (a generator while it runs, with ``stream``)."""
        if stream:
            chunks = self.client.logs(container_id, stderr=stderr, stream=True, follow=True)
            return (line for chunk in chunks for line in chunk.decode().splitlines())
        return str(self.client.logs(container_id, stderr=stderr).decode()).splitlines()

    def remove_container(self, container_id: str, force: bool = False) -> None:
        self.client.remove_container(container_id, force=force)

    # -- the engine

    def get_info(self) -> dict[str, Any]:
        return dict(self.client.info())

    def get_version(self) -> dict[str, Any]:
        return dict(self.client.version())


# atomic-reactor's and dock's name for it
DockerTasker = ImageTasker


def _split(image: ImageName) -> tuple[str, str | None]:
    """``repository`` and ``tag`` as the engine's API takes them."""
    text = str(image)
    if "@" in text:
        return text, None
    name, colon, tag = text.rpartition(":")
    if colon and "/" not in tag:
        return name, tag
    return text, None


def _git(*args: str) -> None:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise TaskerError(f"git {args[0]} failed: {result.stderr.strip()}")
