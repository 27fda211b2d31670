"""Images into and out of the store: ``import`` a root filesystem, ``save`` and ``load``.

``save`` writes one tar that is both an OCI image layout and a docker-archive (what
``docker save`` of Docker >= 25 writes), so ``docker load``, skopeo and ``kiln load`` all
read it. ``load`` takes either form, with layers compressed or not.
"""

from __future__ import annotations

import datetime
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

from kiln.epoch import rfc3339
from kiln.errors import KilnError
from kiln.oci.layer import HashingWriter, open_decompressed, write_dir_layer
from kiln.oci.objects import (
    CONFIG,
    CONTAINERD_NAME,
    INDEX,
    LAYER,
    MANIFEST,
    REF_NAME,
    Descriptor,
    canonical_json,
    image_manifest,
)
from kiln.platform import Platform
from kiln.reference import Reference
from kiln.store.store import Store, StoredImage

_CHUNK = 1 << 20


class TransferError(KilnError):
    """An archive or root filesystem that cannot be imported, loaded or saved."""


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def import_rootfs(
    store: Store,
    source: Path,
    reference: Reference,
    platform: Platform | None = None,
    epoch: int | None = None,
) -> StoredImage:
    """An image of one layer from a directory or a (possibly compressed) tar, as
    ``docker import`` makes it. With ``epoch`` (a SOURCE_DATE_EPOCH) the image is dated
    then and a directory's later mtimes are clamped to it; a tar's layer is its own bytes."""
    platform = platform or Platform.host()
    with store.writing():
        return _import(store, source, reference, platform, epoch)


def _import(
    store: Store, source: Path, reference: Reference, platform: Platform, epoch: int | None
) -> StoredImage:
    if source.is_dir():
        diff_id, size = store.put_blob_stream(lambda out: _write_dir(source, out, epoch))
    elif source.is_file():
        diff_id, size = store.put_blob_stream(lambda out: _copy_decompressed(source, out))
    else:
        raise TransferError(f"cannot import {source}: no such file or directory")
    created = now_rfc3339() if epoch is None else rfc3339(epoch)
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": f"kiln import {source.name}"}],
    }
    config_bytes = canonical_json(config)
    config_digest = store.put_blob(config_bytes)
    manifest = image_manifest(
        Descriptor(CONFIG, config_digest, len(config_bytes)), [Descriptor(LAYER, diff_id, size)]
    )
    return store.add_image(manifest, [reference])


def _write_dir(source: Path, out: HashingWriter, epoch: int | None) -> None:
    write_dir_layer(source, out, clamp=epoch)  # type: ignore[arg-type]


def _copy_decompressed(source: Path, out: HashingWriter) -> None:
    with open_decompressed(source) as stream:
        shutil.copyfileobj(stream, out, _CHUNK)


# -- save --------------------------------------------------------------------------------------


def save(store: Store, names: Sequence[str], out: IO[bytes]) -> None:
    """Write the named images as one OCI-layout + docker-archive tar."""
    images = [(name, store.image(name)) for name in names]
    index_entries: list[dict[str, Any]] = []
    docker_manifest: list[dict[str, Any]] = []
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        for name, image in images:
            for digest in (image.config_digest, *(layer.digest for layer in image.layers),
                           image.manifest_digest):  # fmt: skip
                if digest not in written:
                    written.add(digest)
                    _add_file(tar, _blob_name(digest), store.blob_path(digest))
            tags = _tags_for(name, image)
            size = store.blob_path(image.manifest_digest).stat().st_size
            named: list[dict[str, str] | None] = [
                {CONTAINERD_NAME: str(t), REF_NAME: t.tag} for t in tags
            ]
            for annotations in named or [None]:
                index_entries.append(
                    Descriptor(MANIFEST, image.manifest_digest, size, annotations).to_json()
                )
            docker_manifest.append(
                {
                    "Config": _blob_name(image.config_digest),
                    "RepoTags": [tag.familiar for tag in tags],
                    "Layers": [_blob_name(layer.digest) for layer in image.layers],
                }
            )
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": index_entries}
        _add_bytes(tar, "index.json", canonical_json(index))
        _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())


def _tags_for(name: str, image: StoredImage) -> list[Reference]:
    """Save by tag keeps that tag; save by ID keeps every tag of the image."""
    try:
        asked = Reference.parse(name)
    except KilnError:
        asked = None
    if asked is not None and str(asked) in image.tags:
        return [asked]
    return [Reference.parse(tag) for tag in image.tags]


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = path.stat().st_size, 0o644
    with open(path, "rb") as f:
        tar.addfile(info, f)


# -- load --------------------------------------------------------------------------------------


def load(store: Store, archive: Path) -> list[StoredImage]:
    """Load every image of an OCI-layout or docker-archive tar; returns them, tagged."""
    with tempfile.TemporaryDirectory(dir=store.tmp) as scratch:
        root = Path(scratch)
        try:
            with (
                open_decompressed(archive) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                tar.extractall(root, filter="data")
        except (OSError, tarfile.TarError) as err:
            raise TransferError(f"cannot read image archive {archive}: {err}") from None
        with store.writing():
            if (root / "manifest.json").exists():
                return _load_docker_archive(store, root)
            if (root / "index.json").exists():
                return _load_oci_layout(store, root)
        raise TransferError(f"{archive} is neither a docker-archive nor an OCI layout")


def _inside(root: Path, name: str) -> Path:
    path = (root / PurePosixPath(name)).resolve()
    if not path.is_relative_to(root.resolve()):
        raise TransferError(f"archive entry {name!r} points outside the archive")
    return path


def _load_docker_archive(store: Store, root: Path) -> list[StoredImage]:
    entries = json.loads((root / "manifest.json").read_text())
    loaded = []
    for entry in entries:
        config_bytes = _inside(root, entry["Config"]).read_bytes()
        config = json.loads(config_bytes)
        layers = []
        for index, name in enumerate(entry["Layers"]):
            path = _inside(root, name)
            diff_id, size = store.put_blob_stream(partial(_copy_decompressed, path))
            expected = config["rootfs"]["diff_ids"][index]
            if diff_id != expected:
                raise TransferError(f"layer {name}: content {diff_id} is not diff_id {expected}")
            layers.append(Descriptor(LAYER, diff_id, size))
        config_digest = store.put_blob(config_bytes)
        manifest = image_manifest(Descriptor(CONFIG, config_digest, len(config_bytes)), layers)
        tags = [Reference.parse(tag) for tag in entry.get("RepoTags") or []]
        loaded.append(store.add_image(manifest, tags))
    return loaded


def _load_oci_layout(store: Store, root: Path) -> list[StoredImage]:
    index = json.loads((root / "index.json").read_text())
    loaded = []
    for entry in index["manifests"]:
        manifest_bytes = _inside(root, _blob_name(entry["digest"])).read_bytes()
        manifest = json.loads(manifest_bytes)
        config_desc = Descriptor.from_json(manifest["config"])
        config_bytes = _inside(root, _blob_name(config_desc.digest)).read_bytes()
        store.put_blob(config_bytes, expected=config_desc.digest)
        config = json.loads(config_bytes)
        layers = []
        for position, layer in enumerate(manifest["layers"]):
            path = _inside(root, _blob_name(layer["digest"]))
            diff_id, size = store.put_blob_stream(partial(_copy_decompressed, path))
            if diff_id != config["rootfs"]["diff_ids"][position]:
                raise TransferError(f"layer {layer['digest']} does not match its diff_id")
            layers.append(Descriptor(LAYER, diff_id, size))
        manifest = image_manifest(config_desc, layers)
        name = (entry.get("annotations") or {}).get(CONTAINERD_NAME)
        loaded.append(store.add_image(manifest, [Reference.parse(name)] if name else []))
    return loaded
