"""Pushing an image from the store to a registry.

The order is google/containerregistry's: layers are compressed in parallel (once: the
compressed blob is remembered in the store), every blob the registry lacks is uploaded
in parallel (a HEAD first; a cross-repository mount where the blob is known to be in
another repository of the same registry), then the config, then the manifest, whose
digest the registry reports back is checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from kiln.errors import KilnError
from kiln.oci.layer import HashingWriter
from kiln.oci.objects import (
    CONFIG,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    LAYER,
    LAYER_GZIP,
    LAYER_ZSTD,
    MANIFEST,
    Descriptor,
    canonical_json,
)
from kiln.reference import Reference
from kiln.registry.client import Progress, RegistryClient, file_chunks
from kiln.store import Store

COMPRESSIONS = ("gzip", "zstd", "uncompressed")
FORMATS = ("oci", "docker")
_UNCOMPRESSED = {LAYER, DOCKER_LAYER}
_LAYER_TYPES = {
    ("oci", "gzip"): LAYER_GZIP,
    ("oci", "zstd"): LAYER_ZSTD,
    ("oci", "uncompressed"): LAYER,
    ("docker", "gzip"): DOCKER_LAYER_GZIP,
    ("docker", "uncompressed"): DOCKER_LAYER,
}
_GZIP_KINDS = {LAYER_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip"}
_PARALLEL = 4

Output = Callable[[str], None]


class PushError(KilnError):
    """A push that cannot be done as asked."""


@dataclass(frozen=True)
class Pushed:
    """Where an image went: its reference and the digest the registry stores it under."""

    reference: Reference
    digest: str
    uploaded: int  # blobs uploaded (the others were there already)


def push_image(
    store: Store,
    source: str,
    destination: Reference,
    client: RegistryClient,
    *,
    compression: str = "gzip",
    format: str = "oci",
    output: Output = lambda line: None,
    progress: Progress | None = None,
) -> Pushed:
    """Push the stored image ``source`` (a tag or ID) to ``destination``."""
    if (format, compression) not in _LAYER_TYPES:
        raise PushError(f"--compression {compression} cannot be pushed in {format} format")
    image = store.image(source)
    with store.writing(), ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        layers = list(
            pool.map(lambda d: _layer_blob(store, d, format, compression, output), image.layers)
        )
        config = Descriptor(
            DOCKER_CONFIG if format == "docker" else CONFIG,
            image.config_digest,
            store.blob_path(image.config_digest).stat().st_size,
        )
        repository = destination.repository
        uploads = list(
            pool.map(
                lambda d: _upload(store, client, repository, d, output, progress),
                [*layers, config],
            )
        )
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if format == "docker" else MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    reference = destination.tag or destination.digest
    digest = client.put_manifest(
        repository, reference, canonical_json(manifest), str(manifest["mediaType"])
    )
    output(f"{reference}: digest: {digest}")
    store.remember_repo_digest(
        image.manifest_digest,
        Reference(destination.registry, destination.repository, digest=digest),
    )
    return Pushed(destination, digest, sum(uploads))


def _layer_blob(
    store: Store, layer: Descriptor, format: str, compression: str, output: Output
) -> Descriptor:
    """The layer as it is pushed: compressed (once) if it is stored uncompressed."""
    media_type = _LAYER_TYPES[(format, compression)]
    if layer.media_type not in _UNCOMPRESSED:  # pulled compressed: pushed as it is
        kind = _GZIP_KINDS.get(layer.media_type) or (
            "zstd" if layer.media_type == LAYER_ZSTD else ""
        )
        if (format, kind) not in _LAYER_TYPES:
            raise PushError(f"a {layer.media_type} layer cannot be pushed in {format} format")
        return Descriptor(_LAYER_TYPES[(format, kind)], layer.digest, layer.size)
    if compression == "uncompressed":
        return Descriptor(media_type, layer.digest, layer.size)
    known = store.compressed_layer(layer.digest, compression)
    if known is None:
        output(f"{_short(layer.digest)}: compressing ({compression})")
        with open(store.blob_path(layer.digest), "rb") as tar:
            digest, size = store.put_blob_stream(lambda out: _compress(tar, out, compression))
        store.remember_compressed(layer.digest, compression, digest, size)
        known = (digest, size)
    return Descriptor(media_type, known[0], known[1])


def _compress(source: BinaryIO, out: HashingWriter, compression: str) -> None:
    if compression == "gzip":
        from isal import isal_zlib  # ISA-L: several times zlib's speed, gzip all the same

        # wbits 31: a gzip stream, its header fixed (no name, no time), so the digest repeats
        deflate = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
        while block := source.read(1 << 20):
            out.write(deflate.compress(block))
        out.write(deflate.flush())
    else:
        import zstandard

        zstandard.ZstdCompressor(level=3).copy_stream(source, cast(IO[bytes], out))


def _upload(
    store: Store,
    client: RegistryClient,
    repository: str,
    blob: Descriptor,
    output: Output,
    progress: Progress | None,
) -> int:
    """1 if ``blob`` was uploaded, 0 if the registry had it or could link it from another
    of its repositories."""
    uploaded = 0
    if client.blob_exists(repository, blob.digest):
        output(f"{_short(blob.digest)}: layer already exists")
    elif any(
        client.mount_blob(repository, blob.digest, source)
        for source in store.sources(blob.digest, client.host)
        if source != repository
    ):
        output(f"{_short(blob.digest)}: mounted from another repository")
    else:
        path = store.blob_path(blob.digest)
        chunks = file_chunks(path, progress=progress, digest=blob.digest)
        client.upload_blob(repository, blob.digest, os.path.getsize(path), chunks)
        output(f"{_short(blob.digest)}: pushed")
        uploaded = 1
    store.remember_source(blob.digest, client.host, repository)
    return uploaded


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
