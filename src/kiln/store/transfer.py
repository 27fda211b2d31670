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
    MAX_DOCUMENT,
    REF_NAME,
    Descriptor,
    InvalidObject,
    canonical_json,
    image_manifest,
    parse_config,
    parse_index,
    parse_manifest,
)
from kiln.platform import Platform
from kiln.reference import Reference
from kiln.store.store import Store, StoredImage, StoreError

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
    """Load every image of an OCI-layout or docker-archive tar; returns them, tagged. The
    archive is untrusted: its JSON is checked before anything of it is stored."""
    with tempfile.TemporaryDirectory(dir=store.tmp) as scratch:
        root = Path(scratch)
        try:
            with (
                open_decompressed(archive) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                tar.extractall(root, filter="data")
        except (OSError, tarfile.TarError, EOFError, ValueError) as err:
            raise TransferError(f"cannot read image archive {archive}: {err}") from None
        try:
            with store.writing():
                if (root / "manifest.json").is_file():
                    return _load_docker_archive(store, root)
                if (root / "index.json").is_file():
                    return _load_oci_layout(store, root)
        except InvalidObject as err:
            raise TransferError(f"{archive}: {err}") from None
        raise TransferError(f"{archive} is neither a docker-archive nor an OCI layout")


def _inside(root: Path, name: object, what: str) -> Path:
    """The regular file an archive's JSON names, which must be inside the archive."""
    if not isinstance(name, str) or not name:
        raise InvalidObject(f"{what}: {name!r} is not a path in the archive")
    path = (root / PurePosixPath(name)).resolve()
    if not path.is_relative_to(root.resolve()):
        raise TransferError(f"archive entry {name!r} points outside the archive")
    if not path.is_file():
        raise InvalidObject(f"{what}: {name} is not in the archive")
    return path


def _document(root: Path, name: object, what: str) -> bytes:
    path = _inside(root, name, what)
    if path.stat().st_size > MAX_DOCUMENT:
        raise InvalidObject(f"{what} is larger than {MAX_DOCUMENT >> 20} MiB")
    return path.read_bytes()


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidObject(f"{what} is not a list")
    return value


def _load_docker_archive(store: Store, root: Path) -> list[StoredImage]:
    data = _document(root, "manifest.json", "manifest.json")
    try:
        entries = _list(json.loads(data), "manifest.json")
    except ValueError:
        raise InvalidObject("manifest.json is not JSON") from None
    loaded = []
    for number, entry in enumerate(entries):
        what = f"manifest.json entry {number}"
        if not isinstance(entry, dict):
            raise InvalidObject(f"{what} is not a JSON object")
        names = _list(entry.get("Layers"), f"{what}: Layers")
        config_bytes = _document(root, entry.get("Config"), f"{what}: Config")
        config = parse_config(config_bytes, len(names), f"{what}: config")
        layers = []
        for index, name in enumerate(names):
            path = _inside(root, name, f"{what}: layer {index}")
            expected = config["rootfs"]["diff_ids"][index]
            try:  # a layer of other content is not stored at all
                diff_id, size = store.put_blob_stream(
                    partial(_copy_decompressed, path), expected=expected
                )
            except StoreError:
                raise TransferError(
                    f"layer {name}: its content is not diff_id {expected}"
                ) from None
            layers.append(Descriptor(LAYER, diff_id, size))
        tags = [
            Reference.parse(_text(tag, f"{what}: RepoTags"))
            for tag in _list(entry.get("RepoTags") or [], f"{what}: RepoTags")
        ]
        config_digest = store.put_blob(config_bytes)
        manifest = image_manifest(Descriptor(CONFIG, config_digest, len(config_bytes)), layers)
        loaded.append(store.add_image(manifest, tags))
    return loaded


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidObject(f"{what}: {value!r} is not a string")
    return value


def _load_oci_layout(store: Store, root: Path) -> list[StoredImage]:
    loaded = []
    for entry in parse_index(_document(root, "index.json", "index.json"), "index.json"):
        what = f"manifest {entry.digest}"
        manifest_bytes = _document(root, _blob_name(entry.digest), what)
        manifest = parse_manifest(manifest_bytes, what)
        config_desc = Descriptor.from_json(manifest["config"])
        config_bytes = _document(root, _blob_name(config_desc.digest), f"{what}: config")
        config = parse_config(config_bytes, len(manifest["layers"]), f"{what}: config")
        store.put_blob(config_bytes, expected=config_desc.digest)
        layers = []
        for position, layer in enumerate(manifest["layers"]):
            digest = Descriptor.from_json(layer).digest
            path = _inside(root, _blob_name(digest), f"{what}: layer {position}")
            expected = config["rootfs"]["diff_ids"][position]
            try:
                diff_id, size = store.put_blob_stream(
                    partial(_copy_decompressed, path), expected=expected
                )
            except StoreError:
                raise TransferError(f"layer {digest} does not match its diff_id") from None
            layers.append(Descriptor(LAYER, diff_id, size))
        manifest = image_manifest(config_desc, layers)
        name = (entry.annotations or {}).get(CONTAINERD_NAME)
        tags = [Reference.parse(_text(name, f"{what}: its name"))] if name else []
        loaded.append(store.add_image(manifest, tags))
    return loaded
