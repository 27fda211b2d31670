"""Images through an API shaped like docker-py's ``ImageCollection``, over kiln's store.

A script written against ``docker.from_env().images`` keeps its calls: ``build`` returns
``(Image, logs)``, ``get``, ``list``, ``load``, ``pull``, ``push``, ``remove``, ``prune``
and ``get_registry_data`` take docker-py's arguments, and ``Image`` has ``id``, ``tags``,
``labels``, ``attrs``, ``tag()``, ``save()`` and ``history()``.
"""

from __future__ import annotations

import builtins
import datetime
import io
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from kiln.api.errors import ImageLoadError, ImageNotFound, InvalidArgument, as_api_error
from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.store import Store, StoredImage


class NotSupported(KilnError):
    """An argument the native backend does not honour yet."""


def inspect_dict(image: StoredImage, repo_digests: Sequence[str] = ()) -> dict[str, Any]:
    """What ``docker image inspect`` shows of an image (``repo_digests``: the store's)."""
    config = image.config
    return {
        "Id": image.id,
        "RepoTags": [Reference.parse(t).familiar for t in image.tags],
        "RepoDigests": [Reference.parse(name).familiar for name in repo_digests],
        "Created": config.get("created", ""),
        "Author": config.get("author", ""),
        "Config": config.get("config", {}),
        "Architecture": config.get("architecture", ""),
        "Variant": config.get("variant", ""),
        "Os": config.get("os", ""),
        "Size": image.size,
        "RootFS": {"Type": "layers", "Layers": config.get("rootfs", {}).get("diff_ids", [])},
        "Manifest": image.manifest_digest,
    }


class Image:
    """An image of the store, as docker-py's ``Image``."""

    def __init__(self, collection: ImageCollection, stored: StoredImage) -> None:
        self.collection = collection
        self._stored = stored
        # what docker-py's attrs hold: the answer when the image was asked for (or reloaded)
        self._repo_digests = collection.store.repo_digests(stored.manifest_digest)

    def __repr__(self) -> str:
        return f"<Image: '{', '.join(self.tags)}'>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def id(self) -> str:
        return self._stored.id

    @property
    def short_id(self) -> str:
        return self.id[:19]  # "sha256:" and 12 hex digits, as docker-py

    @property
    def tags(self) -> list[str]:
        return [Reference.parse(t).familiar for t in self._stored.tags]

    @property
    def labels(self) -> dict[str, str]:
        return dict((self._stored.config.get("config") or {}).get("Labels") or {})

    @property
    def attrs(self) -> dict[str, Any]:
        return inspect_dict(self._stored, self._repo_digests)

    def reload(self) -> None:
        self._stored = self.collection.store.image(self._stored.manifest_digest)
        self._repo_digests = self.collection.store.repo_digests(self._stored.manifest_digest)

    def tag(self, repository: str, tag: str | None = None, **kwargs: Any) -> bool:
        """Tag this image as ``repository[:tag]``; True, as docker-py returns."""
        name = f"{repository}:{tag}" if tag else repository
        self.collection.store.tag(self._stored.manifest_digest, Reference.parse(name))
        self.reload()
        return True

    def save(self, chunk_size: int = 2 * 1024 * 1024, named: str | bool = False) -> Iterator[bytes]:
        """The image as a tar that ``docker load`` and ``kiln load`` read, in chunks."""
        from kiln.store.transfer import save

        if isinstance(named, str):
            if named not in self.tags and named not in self._stored.tags:
                raise InvalidArgument(f"{named} is not a valid tag for this image")
            name = named
        elif named and self._stored.tags:
            name = self._stored.tags[0]
        else:
            name = self._stored.manifest_digest
        with tempfile.TemporaryFile() as archive:
            save(self.collection.store, [name], archive)
            archive.seek(0)
            while chunk := archive.read(chunk_size):
                yield chunk

    def history(self) -> list[dict[str, Any]]:
        """Newest first, as the engine's history: the top entry carries the ID and tags,
        ``Created`` is in seconds since 1970 and ``Size`` is the bytes of the layer the
        step made (0 for a step that made none)."""
        entries = list(self._stored.config.get("history") or [])
        sizes = iter(layer.size for layer in self._stored.layers)
        made = [0 if entry.get("empty_layer") else next(sizes, 0) for entry in entries]
        rows = []
        for n, (entry, size) in enumerate(zip(reversed(entries), reversed(made), strict=True)):
            rows.append({
                "Id": self.id if n == 0 else "<missing>",
                "Created": _seconds(entry.get("created", "")),
                "CreatedBy": entry.get("created_by", ""),
                "Tags": self.tags if n == 0 else None,
                "Size": size,
                "Comment": entry.get("comment", ""),
            })  # fmt: skip
        return rows


class ImageCollection:
    """``client.images``: the images of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, name: str) -> Image:
        try:
            return Image(self, self.store.image(name))
        except KilnError:
            raise ImageNotFound(f"no such image: {name}") from None

    def list(
        self, name: str | None = None, all: bool = False, filters: dict[str, Any] | None = None
    ) -> builtins.list[Image]:
        """Every image (or those of repository ``name``); ``filters`` takes docker's
        ``dangling`` and ``label`` filters."""
        images = [Image(self, stored) for stored in self.store.images()]
        if name:
            wanted = Reference.parse(name)
            by_tag = ":" in name.rpartition("/")[2]
            images = [
                image for image in images
                if any(_same_repository(Reference.parse(t), wanted, by_tag)
                       for t in image._stored.tags)
            ]  # fmt: skip
        for key, value in (filters or {}).items():
            values = value if isinstance(value, list) else [value]
            if key == "dangling":
                dangling = str(values[0]).lower() in ("1", "true")
                images = [image for image in images if (not image.tags) == dangling]
            elif key == "label":
                images = [
                    image for image in images if builtins.all(_has_label(image, v) for v in values)
                ]
            else:
                raise NotSupported(f"images.list: the filter {key!r} is not supported")
        return images

    def load(self, data: bytes | IO[bytes]) -> builtins.list[Image]:
        """The images of a ``docker save``/``kiln save``/OCI-layout tar."""
        from kiln.store.transfer import load

        with tempfile.NamedTemporaryFile(dir=self.store.tmp, suffix=".tar") as archive:
            if isinstance(data, bytes):
                archive.write(data)
            else:
                shutil.copyfileobj(data, archive)
            archive.flush()
            try:
                loaded = load(self.store, Path(archive.name))
            except KilnError as err:
                raise ImageLoadError(str(err)) from None
            return [Image(self, stored) for stored in loaded]

    def remove(self, image: str, force: bool = False, noprune: bool = False) -> None:
        self.get(image)  # (ImageNotFound, as docker-py raises it)
        with as_api_error():
            self.store.remove(image, force=force)

    def prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Untagged images and unused blobs, as docker-py's prune reports it."""
        if filters:
            raise NotSupported("images.prune: filters are not supported")
        removed, freed = self.store.prune()
        deleted = [{"Deleted": digest} for digest in removed]
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": freed}

    def build(self, **kwargs: Any) -> tuple[Image, Iterator[dict[str, Any]]]:
        """docker-py's ``images.build``: see ``build_native`` for what each argument does."""
        from kiln.api.build import build_native

        if kwargs.get("path") is None and kwargs.get("fileobj") is None:
            raise TypeError("You must specify a directory to build in path")  # (docker-py's)
        stored, log = build_native(self.store, **kwargs)
        return Image(self, stored), iter(log)

    def pull(
        self,
        repository: str,
        tag: str | None = None,
        all_tags: bool = False,
        *,
        platform: str | None = None,
        insecure: bool | None = None,
        auth_config: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Image:
        from kiln.platform import Platform
        from kiln.registry import pull_image

        if all_tags:
            raise NotSupported("images.pull: all_tags is not supported")
        reference = Reference.parse(_joined(repository, tag))
        wanted = Platform.parse(platform) if platform else Platform.host()
        with as_api_error(), _registry(reference, insecure, auth_config) as client:
            return Image(self, pull_image(self.store, reference, client, platform=wanted))

    def push(
        self,
        repository: str,
        tag: str | None = None,
        stream: bool = False,
        auth_config: dict[str, str] | None = None,
        decode: bool = False,
        *,
        insecure: bool | None = None,
        **kwargs: Any,
    ) -> str | Iterator[Any]:
        """Push, and answer as the engine's push does: its JSON lines as one string; with
        ``stream``, one at a time (``decode``: as dicts). The last carries the digest."""
        from kiln.registry import push_image

        name = _joined(repository, tag)
        reference = Reference.parse(name)
        lines: builtins.list[dict[str, Any]] = []
        with as_api_error(), _registry(reference, insecure, auth_config) as client:
            pushed = push_image(
                self.store, name, reference, client,
                output=lambda line: lines.append({"status": line}),
            )  # fmt: skip
        lines.append({"aux": {"Tag": reference.tag, "Digest": pushed.digest}})
        if stream:
            return iter(lines) if decode else (json.dumps(line) + "\r\n" for line in lines)
        return "".join(json.dumps(line) + "\r\n" for line in lines)

    def get_registry_data(
        self, name: str, auth_config: dict[str, str] | None = None, *,
        insecure: bool | None = None, **kwargs: Any,
    ) -> RegistryData:  # fmt: skip
        """What the registry says of ``name`` without pulling it: digest and platforms."""
        from kiln.registry.pull import ACCEPT

        reference = Reference.parse(name)
        with as_api_error(), _registry(reference, insecure, auth_config) as client:
            found = client.get_manifest(
                reference.repository, reference.digest or reference.tag, ACCEPT
            )
            manifest = json.loads(found.data)
            platforms = [entry.get("platform") or {} for entry in manifest.get("manifests") or []]
            if not platforms:
                config = json.loads(_blob(client, reference.repository, manifest["config"]))
                platforms = [{"os": config.get("os"), "architecture": config.get("architecture")}]
        descriptor = {
            "mediaType": found.media_type,
            "digest": found.digest,
            "size": len(found.data),
        }
        return RegistryData(name, {"Descriptor": descriptor, "Platforms": platforms})


class RegistryData:
    """docker-py's ``RegistryData``: an image as its registry describes it."""

    def __init__(self, image_name: str, attrs: dict[str, Any]) -> None:
        self.image_name = image_name
        self.attrs = attrs

    @property
    def id(self) -> str:
        return str(self.attrs["Descriptor"]["digest"])

    @property
    def short_id(self) -> str:
        return self.id[:19]

    def has_platform(self, platform: str) -> bool:
        os_name, _, arch = platform.partition("/")
        return any(p.get("os") == os_name and (not arch or p.get("architecture") == arch)
                   for p in self.attrs["Platforms"])  # fmt: skip


def _seconds(created: str) -> int:
    """An RFC 3339 time (an image config's) as seconds since 1970; 0 if there is none."""
    try:
        return int(datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _joined(repository: str, tag: str | None) -> str:
    """``repository`` and docker-py's ``tag`` as one reference: a digest given as the tag
    is joined with ``@``, as docker-py joins it."""
    if not tag:
        return repository
    return f"{repository}@{tag}" if tag.startswith("sha256:") else f"{repository}:{tag}"


def _registry(
    reference: Reference, insecure: bool | None, auth_config: dict[str, str] | None
) -> Any:
    """A client of ``reference``'s registry: with docker-py's ``auth_config`` (username
    and password, or an identity token) where given, else Docker's configured credentials."""
    from kiln.registry import Credentials, RegistryClient

    credentials = None
    if auth_config:
        credentials = Credentials(
            str(auth_config.get("username", "")), str(auth_config.get("password", "")),
            str(auth_config.get("identitytoken", "")),
        )  # fmt: skip
    return RegistryClient(reference.registry, insecure=insecure, credentials=credentials)


def _blob(client: Any, repository: str, descriptor: dict[str, Any]) -> bytes:
    data = io.BytesIO()
    client.get_blob(repository, descriptor["digest"], data.write)
    return data.getvalue()


def _same_repository(tag: Reference, wanted: Reference, by_tag: bool) -> bool:
    return tag.name == wanted.name and (not by_tag or tag.tag == wanted.tag)


def _has_label(image: Image, spec: str) -> bool:
    key, equals, value = spec.partition("=")
    return key in image.labels and (not equals or image.labels[key] == value)
