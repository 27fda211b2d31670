"""The narrow seam between the workflow and whatever builds and holds images.

atomic-reactor swapped build methods cheaply because its plugins only met the engine
through a small tasker; ``ImageEngine`` is that seam, typed. ``NativeEngine`` is kiln's own
store, builder and registry client; ``DockerEngine`` is a Docker engine through docker-py
(its builds get kiln's context tar). Plugins never touch either directly.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from kiln.errors import KilnError
from kiln.reference import Reference

if TYPE_CHECKING:
    import docker

    from kiln.engine.executor import Volume
    from kiln.store import Store

Output = Callable[[str], None]


class EngineError(KilnError):
    """An engine operation (pull, push, run, ...) that failed."""


@dataclass(frozen=True)
class BuildSpec:
    """What the build phase asks of an engine."""

    context: Path
    dockerfile: Path  # may lie outside the context (the workflow's edited copy)
    ignore_dockerfile: Path  # the source's own Dockerfile, whose .dockerignore applies
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    volumes: tuple[Volume, ...] = ()
    isolation: str | None = None
    insecure_registries: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageInfo:
    """What plugins read of an image."""

    id: str
    labels: dict[str, str]
    architecture: str
    os: str
    digest: str = ""  # the manifest digest where the engine knows it
    repo_digests: tuple[str, ...] = ()  # name@digest it is known by in registries


class ImageEngine(Protocol):
    name: str

    def build(self, spec: BuildSpec, output: Output) -> str:
        """Build; the image ID."""

    def pull(self, name: str, insecure: bool, output: Output) -> ImageInfo:
        """Fetch ``name`` (registry included) and keep it under that name."""

    def inspect(self, name: str) -> ImageInfo: ...

    def exists(self, name: str) -> bool: ...

    def tag(self, name: str, target: str) -> None: ...

    def push(self, name: str, insecure: bool, output: Output) -> str:
        """Push the image tagged ``name`` to its registry; the manifest digest there."""

    def save(self, name: str, out: IO[bytes]) -> None:
        """Write a tarball ``docker load`` takes."""

    def remove(self, name: str) -> None: ...

    def run(self, name: str, command: list[str], output: Output) -> int:
        """Run ``command`` in a throwaway container of ``name``; its exit status."""

    def squash(self, name: str, keep: int, tag: str) -> str:
        """Merge the layers above the first ``keep`` into one; tag and return the new ID."""

    def layer_count(self, name: str) -> int: ...

    def close(self) -> None: ...


class NativeEngine:
    """kiln's store, builder and registry client."""

    name = "native"

    def __init__(self, store: Store, isolation: str | None = None) -> None:
        self.store = store
        self.isolation = isolation  # how images run (test_built_image): as builds' RUN

    def build(self, spec: BuildSpec, output: Output) -> str:
        from kiln.engine.executor import Builder, BuildRequest

        request = BuildRequest(
            context=spec.context, dockerfile=spec.dockerfile, tags=spec.tags,
            build_args=dict(spec.build_args), target=spec.target, no_cache=spec.no_cache,
            isolation=spec.isolation, insecure_registries=spec.insecure_registries,
            volumes=spec.volumes,
        )  # fmt: skip
        return Builder(self.store, output).build(request).id

    def pull(self, name: str, insecure: bool, output: Output) -> ImageInfo:
        from kiln.platform import Platform
        from kiln.registry import RegistryClient, pull_image

        reference = Reference.parse(name)
        with RegistryClient(reference.registry, insecure=True if insecure else None) as client:
            image = pull_image(
                self.store, reference, client, platform=Platform.host(), output=output
            )
        return self.inspect(image.manifest_digest)

    def inspect(self, name: str) -> ImageInfo:
        image = self.store.image(name)
        config = image.config
        return ImageInfo(
            image.id, dict((config.get("config") or {}).get("Labels") or {}),
            str(config.get("architecture", "")), str(config.get("os", "")),
            image.manifest_digest,
        )  # fmt: skip

    def exists(self, name: str) -> bool:
        try:
            self.store.image(name)
        except KilnError:
            return False
        return True

    def tag(self, name: str, target: str) -> None:
        self.store.tag(name, Reference.parse(target))

    def push(self, name: str, insecure: bool, output: Output) -> str:
        from kiln.registry import RegistryClient, push_image

        reference = Reference.parse(name)
        with RegistryClient(reference.registry, insecure=True if insecure else None) as client:
            return push_image(self.store, name, reference, client, output=output).digest

    def save(self, name: str, out: IO[bytes]) -> None:
        from kiln.store.transfer import save

        save(self.store, [name], out)

    def remove(self, name: str) -> None:
        self.store.remove(name, force=True)

    def run(self, name: str, command: list[str], output: Output) -> int:
        from kiln.engine.container import run_image

        return run_image(
            self.store, name, command, "none",
            lambda data: output(data.decode(errors="replace").rstrip("\n")), self.isolation,
        )  # fmt: skip

    def squash(self, name: str, keep: int, tag: str) -> str:
        from kiln.store.squash import squash

        return str(squash(self.store, name, keep=keep, tag=Reference.parse(tag)).id)

    def layer_count(self, name: str) -> int:
        return len(self.store.image(name).layers)

    def close(self) -> None:
        self.store.close()


class DockerEngine:
    """A Docker engine through docker-py."""

    name = "docker"

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def build(self, spec: BuildSpec, output: Output) -> str:
        from kiln.api.docker_backend import DockerImageCollection, context_tar

        if spec.volumes:
            raise EngineError(
                "a Docker engine build cannot mount build-time volumes (inject_files, "
                "volumes): use the native backend"
            )
        ignore_for = spec.ignore_dockerfile.relative_to(spec.context).as_posix()
        archive = context_tar(spec.context, ignore_for)
        with tarfile.open(fileobj=archive, mode="a") as tar:  # the edited Dockerfile joins it
            tar.add(str(spec.dockerfile), arcname=_DOCKERFILE_IN_CONTEXT)
        archive.seek(0)
        image, _ = DockerImageCollection(self.client).build(
            fileobj=archive, custom_context=True, dockerfile=_DOCKERFILE_IN_CONTEXT,
            tag=spec.tags[0] if spec.tags else None, buildargs=dict(spec.build_args),
            target=spec.target or None, nocache=spec.no_cache, output=output, rm=True,
            forcerm=True,
        )  # fmt: skip
        for extra in spec.tags[1:]:
            image.tag(extra)
        return str(image.id)

    def pull(self, name: str, insecure: bool, output: Output) -> ImageInfo:
        import docker.errors

        reference = Reference.parse(name)
        output(f"pulling {name}")
        try:
            self.client.images.pull(
                f"{reference.registry}/{reference.repository}",
                tag=reference.digest or reference.tag,
            )
        except docker.errors.APIError as err:
            raise EngineError(f"cannot pull {name}: {err.explanation or err}") from None
        return self.inspect(name)

    def inspect(self, name: str) -> ImageInfo:
        attrs = self._image(name).attrs
        return ImageInfo(
            str(attrs["Id"]), dict((attrs.get("Config") or {}).get("Labels") or {}),
            str(attrs.get("Architecture", "")), str(attrs.get("Os", "")),
            repo_digests=tuple(attrs.get("RepoDigests") or ()),
        )  # fmt: skip

    def exists(self, name: str) -> bool:
        try:
            self._image(name)
        except EngineError:
            return False
        return True

    def _image(self, name: str) -> Any:
        import docker.errors

        try:
            return self.client.images.get(name)
        except docker.errors.ImageNotFound:
            raise EngineError(f"no such image: {name}") from None

    def tag(self, name: str, target: str) -> None:
        reference = Reference.parse(target)
        self._image(name).tag(f"{reference.registry}/{reference.repository}", reference.tag)

    def push(self, name: str, insecure: bool, output: Output) -> str:
        reference = Reference.parse(name)
        digest = ""
        stream = self.client.api.push(
            f"{reference.registry}/{reference.repository}", reference.tag, stream=True,
            decode=True,
        )  # fmt: skip
        for entry in stream:
            if "error" in entry:
                raise EngineError(f"cannot push {name}: {str(entry['error']).strip()}")
            digest = ((entry.get("aux") or {}).get("Digest")) or digest
            if entry.get("status") and not entry.get("progressDetail"):
                output(str(entry["status"]))
        if not digest:
            raise EngineError(f"cannot push {name}: the engine reported no digest")
        return str(digest)

    def save(self, name: str, out: IO[bytes]) -> None:
        for chunk in self._image(name).save(named=True):
            out.write(chunk)

    def remove(self, name: str) -> None:
        self.client.images.remove(name, force=True)

    def run(self, name: str, command: list[str], output: Output) -> int:
        container = self.client.containers.create(
            name, command or None, network_mode="none", detach=True
        )
        try:
            container.start()
            for line in container.logs(stream=True, follow=True):
                output(line.decode(errors="replace").rstrip("\n"))
            return int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)

    def squash(self, name: str, keep: int, tag: str) -> str:
        """Squashed by kiln: the image goes through a scratch store and comes back."""
        from kiln.store import Store
        from kiln.store.squash import squash
        from kiln.store.transfer import load, save

        with tempfile.TemporaryDirectory(prefix="kiln-squash-") as scratch:
            archive = Path(scratch) / "image.tar"
            with open(archive, "wb") as out:
                self.save(name, out)
            store = Store(Path(scratch) / "store")
            try:
                loaded = load(store, archive)[0]
                squash(store, loaded.manifest_digest, keep=keep, tag=Reference.parse(tag))
                with open(archive, "wb") as out:
                    save(store, [tag], out)
            finally:
                store.close()
            with open(archive, "rb") as data:
                self.client.images.load(data)
        return self.inspect(tag).id

    def layer_count(self, name: str) -> int:
        return len((self._image(name).attrs.get("RootFS") or {}).get("Layers") or [])

    def close(self) -> None:
        self.client.close()


_DOCKERFILE_IN_CONTEXT = ".kiln-workflow.Dockerfile"
