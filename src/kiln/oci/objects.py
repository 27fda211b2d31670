"""Descriptors, manifests and configs, and the exact JSON bytes their digests are taken over."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from kiln.errors import KilnError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
# Manifests, indexes and configs larger than this are refused, as containerd refuses them:
# they are read whole, and a registry or an archive could otherwise hand kiln gigabytes.
MAX_DOCUMENT = 4 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


class InvalidObject(KilnError):
    """A manifest, index, config or descriptor from outside kiln (a registry, an archive,
    an image) that is malformed: refused before any of it touches the store."""


def parse_digest(value: object, what: str = "digest") -> str:
    """``value`` if it is a sha256 digest (``sha256:`` and 64 lowercase hex digits): the
    one check every digest from outside passes before it names a blob, a snapshot or a
    path in the store."""
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise InvalidObject(f"{what}: {_shown(value)} is not a sha256 digest")
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_document(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object of at most ``MAX_DOCUMENT`` bytes (a manifest, index or config)."""
    if len(data) > MAX_DOCUMENT:
        raise InvalidObject(f"{what} is larger than {MAX_DOCUMENT >> 20} MiB")
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidObject(f"{what} is not JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidObject(f"{what} is not a JSON object")
    return parsed


def parse_manifest(data: bytes, what: str = "manifest") -> dict[str, Any]:
    """An image manifest (OCI or Docker schema 2), its descriptors checked."""
    manifest = load_document(data, what)
    if manifest.get("schemaVersion") != 2 or "config" not in manifest:
        raise InvalidObject(f"{what}: only schema 2 (OCI or Docker) image manifests are supported")
    Descriptor.from_json(manifest["config"], f"{what}: config")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise InvalidObject(f"{what}: its layers are not a list")
    for number, layer in enumerate(layers):
        Descriptor.from_json(layer, f"{what}: layer {number}")
    return manifest


def parse_index(data: bytes, what: str = "index") -> list[Descriptor]:
    """The manifests an index (or a Docker manifest list) names."""
    index = load_document(data, what)
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise InvalidObject(f"{what}: its manifests are not a list")
    return [Descriptor.from_json(e, f"{what}: manifest {n}") for n, e in enumerate(entries)]


def parse_config(data: bytes, layers: int, what: str = "image config") -> dict[str, Any]:
    """An image config whose ``rootfs.diff_ids`` are ``layers`` digests."""
    config = load_document(data, what)
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise InvalidObject(f"{what}: no rootfs.diff_ids")
    for number, diff_id in enumerate(diff_ids):
        parse_digest(diff_id, f"{what}: diff_id {number}")
    if len(diff_ids) != layers:
        raise InvalidObject(f"{what}: {len(diff_ids)} diff_ids for {layers} layers")
    for key, kind in (("config", dict), ("history", list)):
        if config.get(key) is not None and not isinstance(config[key], kind):
            raise InvalidObject(f"{what}: {key} is not a JSON {kind.__name__}")
    return config


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """What a manifest or index says about a blob: its type, digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    platform: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        if self.platform:
            data["platform"] = dict(self.platform)
        return data

    @classmethod
    def from_json(cls, data: object, what: str = "descriptor") -> Descriptor:
        """A descriptor as JSON gives it, checked: a media type, a digest, a size."""
        if not isinstance(data, dict):
            raise InvalidObject(f"{what} is not a JSON object")
        media_type = data.get("mediaType")
        if not isinstance(media_type, str):
            raise InvalidObject(f"{what} has no mediaType")
        digest = parse_digest(data.get("digest"), f"{what}")
        size = data.get("size")
        if type(size) is not int or size < 0:
            raise InvalidObject(f"{what}: size {_shown(size)} is not a number of bytes")
        annotations, platform = data.get("annotations"), data.get("platform")
        for name, value in (("annotations", annotations), ("platform", platform)):
            if value is not None and not (
                isinstance(value, dict)
                and all(isinstance(k, str) and isinstance(v, str | list) for k, v in value.items())
            ):
                raise InvalidObject(f"{what}: its {name} are malformed")
        return cls(media_type, digest, size, annotations, platform)


def image_manifest(config: Descriptor, layers: list[Descriptor]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
