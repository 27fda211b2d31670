"""Squash an image's upper layers into one, as ``docker build --squash`` and docker-squash do.

The merged layer changes the kept layers below it exactly as the whole squashed range did.
Pass one reads the range's tar headers, top layer first, and decides which entry of which layer
survives: an entry is hidden by a higher layer's entry at its path, by a whiteout of it or of a
parent, by a parent a higher layer made a non-directory, and by a higher opaque marker in a
parent. Pass two writes the survivors in kiln's layer order, their content read from the layers
at random, with whiteouts and opaque markers for what the range hid of the kept layers.
Compressed layers are decompressed once into unnamed temp files under the store; no layer is
ever held in memory, only the headers of its entries.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, Literal

from kiln.oci.layer import OPAQUE_MARKER, WHITEOUT_PREFIX, HashingWriter, open_decompressed
from kiln.oci.objects import (
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    LAYER,
    Descriptor,
    canonical_json,
)
from kiln.reference import Reference
from kiln.store.store import Store, StoredImage, StoreError

_CHUNK = 1 << 20


class SquashError(StoreError):
    """An image that cannot be squashed as asked."""


def squash(store: Store, name: str, *, keep: int = 0, tag: Reference | None = None) -> StoredImage:
    """A new image of ``name`` whose first ``keep`` layers are its own and whose other layers
    are merged into one; its config differs only in ``rootfs`` and ``history``.

    ``keep`` is the layer count of the base image for what ``docker build --squash`` does, 0
    for a single layer. With fewer than two layers above ``keep`` there is nothing to merge:
    the image itself is returned. ``tag``, if given, names the result.
    """
    count = len(store.image(name).layers)
    if not 0 <= keep <= count:
        raise SquashError(f"cannot keep {keep} layers of {name}: it has {count}")
    return merge_layers(store, name, [range(keep, count)], tags=[] if tag is None else [tag])


def merge_layers(
    store: Store, name: str, groups: Sequence[range], *, tags: Sequence[Reference] = ()
) -> StoredImage:
    """A new image of ``name`` in which the layers of each range of ``groups`` (indices of
    consecutive layers, ranges in order and apart) are merged into one, and the other layers
    stay; its config differs only in ``rootfs`` and ``history``, as ``squash``'s.

    This is layer control after a build (``--squash``, incubator's ``layers``, makisu's
    ``#!COMMIT``): each step keeps its own cached layer, and only the image is regrouped.
    Without a range of two layers or more there is nothing to merge: the image itself is
    returned. ``tags`` name the result.
    """
    image = store.image(name)
    layers = image.layers
    start = 0
    for group in groups:
        if group.step != 1 or group.start < start or group.stop > len(layers):
            raise SquashError(
                f"cannot merge layers {group.start + 1} to {group.stop} of {name}: "
                f"the ranges must be in order, apart and within its {len(layers)} layers"
            )
        start = group.stop
    merging = [group for group in groups if len(group) >= 2]
    if not merging:
        for tag in tags:
            store.tag(image.manifest_digest, tag)
        return store.image(image.manifest_digest) if tags else image
    with store.writing():
        merged: dict[int, tuple[str, int]] = {}  # the first index of a range: its new layer
        for group in merging:
            try:
                merged[group.start] = _merge_range(store, layers, group)
            except (OSError, EOFError, tarfile.TarError, zlib.error) as err:
                raise SquashError(f"cannot squash {name}: {err}") from None
        docker = image.manifest.get("mediaType") == DOCKER_MANIFEST
        diff_ids: list[str] = []
        descriptors: list[dict[str, Any]] = []
        index = 0
        while index < len(layers):
            if index in merged:
                diff_id, size = merged[index]
                diff_ids.append(diff_id)
                layer = Descriptor(DOCKER_LAYER if docker else LAYER, diff_id, size)
                descriptors.append(layer.to_json())
                index = next(g.stop for g in merging if g.start == index)
            else:
                diff_ids.append(image.diff_ids[index])
                descriptors.append(image.manifest["layers"][index])
                index += 1
        config = copy.deepcopy(image.config)
        config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        if "history" in config:
            comments = {
                group: (
                    f"merge layers {group.start + 1} to {group.stop} of {image.id}"
                    if group.start or group.stop < len(layers)
                    else f"create new from {image.id}"
                )
                for group in merging
            }
            config["history"] = _history(config["history"], comments, config.get("created"))
        config_bytes = canonical_json(config)
        manifest = {
            **image.manifest,
            "config": {
                **image.manifest["config"],
                "digest": store.put_blob(config_bytes),
                "size": len(config_bytes),
            },
            "layers": descriptors,
        }
        return store.add_image(manifest, list(tags))


def _merge_range(store: Store, layers: list[Descriptor], group: range) -> tuple[str, int]:
    """(diff_id, size) of the one layer that changes the layers below ``group`` as its
    layers did."""
    with contextlib.ExitStack() as stack:
        sources = [_open_layer(store, layer, stack) for layer in layers[group.start : group.stop]]
        entries, sealed = _merge(sources)
        if group.start:
            entries.update(_hiders(store, layers[: group.start], entries, sealed))
        return store.put_blob_stream(partial(_write, entries))


def _history(
    history: list[dict[str, Any]], comments: dict[range, str], created: str | None
) -> list[dict[str, Any]]:
    """Docker's squash history, for each merged range: its layers' entries stay, marked
    empty, and one entry for the merged layer follows them (before the next layer's entry),
    dated as the image (so that a merge is repeatable)."""

    def entry(group: range) -> dict[str, Any]:
        done.add(group)
        merged = {"comment": comments[group]}
        if created is not None:
            merged["created"] = created
        return merged

    done: set[range] = set()
    result = []
    pending: range | None = None  # a range whose entries are all in, awaiting its entry
    layers = 0
    for item in history:
        if not item.get("empty_layer"):
            if pending is not None:
                result.append(entry(pending))
                pending = None
            group = next((g for g in comments if layers in g), None)
            if group is not None:
                item = {**item, "empty_layer": True}
                if layers == group.stop - 1:
                    pending = group
            layers += 1
        result.append(item)
    return [*result, *(entry(g) for g in comments if g not in done)]


@dataclass(frozen=True)
class _Entry:
    """One entry of the merged layer: its header, and where a regular file's content is."""

    info: tarfile.TarInfo
    content: tuple[tarfile.TarFile, tarfile.TarInfo] | None = None


def _open_layer(store: Store, layer: Descriptor, stack: contextlib.ExitStack) -> tarfile.TarFile:
    """The layer's tar, seekable, since pass two reads entries out of the layer's order: the
    blob itself when stored uncompressed, else a copy decompressed once into an unnamed temp
    file (gone when closed, even after a crash)."""
    source: IO[bytes] = stack.enter_context(open_decompressed(store.blob_path(layer.digest)))
    if not _plain(source):
        spool = stack.enter_context(tempfile.TemporaryFile(dir=store.tmp))  # noqa: SIM115
        shutil.copyfileobj(source, spool, _CHUNK)
        spool.seek(0)
        source = spool
    return stack.enter_context(tarfile.open(fileobj=source, mode="r:"))


def _plain(stream: IO[bytes]) -> bool:
    """Whether ``open_decompressed`` handed back the file itself (the layer is not compressed),
    the only case where seeking is cheap."""
    return isinstance(stream, io.BufferedReader)


def _merge(layers: list[tarfile.TarFile]) -> tuple[dict[str, _Entry], set[str]]:
    """The entries that survive the range, by name, and the paths below which the range hides
    everything of the layers under it."""
    entries: dict[str, _Entry] = {}
    shadowed: set[str] = set()  # paths a higher layer has an entry or a whiteout for
    sealed: set[str] = set()  # paths below which a higher layer hides everything
    for tar in reversed(layers):
        latest: dict[str, tarfile.TarInfo] = {}  # the last entry of each path wins
        origin: dict[str, tarfile.TarInfo] = {}  # the entry whose content a path has
        whiteouts: set[str] = set()
        opaque: set[str] = set()
        for member in tar:
            path = _path(member.name)
            if not path:
                continue  # the layer's root
            parent, _, base = path.rpartition("/")
            if base == OPAQUE_MARKER:
                opaque.add(parent)
            elif base.startswith(WHITEOUT_PREFIX):
                whiteouts.add(_join(parent, base.removeprefix(WHITEOUT_PREFIX)))
            else:
                latest[path] = member
                linked = origin.get(_path(member.linkname)) if member.islnk() else None
                origin[path] = linked or member
        # A hard link's group keeps the content, carried by its first surviving path: its
        # target may sort after it, or be gone (replaced or deleted by a higher layer).
        groups: dict[tarfile.TarInfo, list[str]] = {}
        for path in latest:
            if path not in shadowed and not _sealed_above(path, sealed):
                groups.setdefault(origin[path], []).append(path)
        for first, paths in groups.items():
            primary, *others = sorted(paths, key=_order)
            content = (tar, first) if first.isreg() else None
            entries[primary] = _Entry(_header(first, primary), content)
            for path in others:
                link = _header(first, path)
                link.type, link.linkname, link.size = tarfile.LNKTYPE, primary, 0
                entries[path] = _Entry(link)
        # Whiteouts and opaque markers hide only what lies below their own layer.
        shadowed.update(latest, whiteouts)
        sealed.update(whiteouts, opaque, (p for p, m in latest.items() if not m.isdir()))
    return entries, sealed


def _hiders(
    store: Store, kept: list[Descriptor], entries: dict[str, _Entry], sealed: set[str]
) -> dict[str, _Entry]:
    """Whiteouts and opaque markers for what the range hid of the kept layers, where those
    have something to hide: a path the range deleted gets a whiteout, a directory it emptied
    (opaque, or deleted and made again) an opaque marker; a non-directory hides by itself."""
    directories = _directories(entries)  # with those a layer has entries in but no entry for
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    for path in sealed:
        if _sealed_above(path, sealed):
            continue  # a parent's whiteout or marker hides it already
        entry = entries.get(path)
        if entry is None and path not in directories:
            whiteouts.add(path)
        elif entry is None or entry.info.isdir():
            opaque.add(path)
    if not whiteouts and not opaque:
        return {}
    hiders: dict[str, _Entry] = {}
    for path in _in_layers(store, kept, whiteouts, opaque):
        if path in whiteouts:
            parent, _, base = path.rpartition("/")
            marker = _join(parent, WHITEOUT_PREFIX + base)
        else:
            marker = _join(path, OPAQUE_MARKER)
        hiders[marker] = _Entry(tarfile.TarInfo(marker))  # kiln's whiteouts: 0644, 0/0, mtime 0
    return hiders


def _in_layers(
    store: Store, layers: list[Descriptor], paths: set[str], directories: set[str]
) -> set[str]:
    """Which of ``paths`` the layers have something at or below, and which of
    ``directories`` they have something strictly below."""
    found: set[str] = set()
    for layer in layers:
        with open_decompressed(store.blob_path(layer.digest)) as stream:
            mode: Literal["r:", "r|"] = "r:" if _plain(stream) else "r|"  # seek past content
            with tarfile.open(fileobj=stream, mode=mode) as tar:
                for member in tar:
                    path = _path(member.name)
                    if path.rpartition("/")[2].startswith(WHITEOUT_PREFIX):
                        path = path.rpartition("/")[0]  # only its directory is there
                    if path in paths:
                        found.add(path)
                    while "/" in path:
                        path = path.rpartition("/")[0]
                        if path in paths or path in directories:
                            found.add(path)
    return found


def _directories(names: dict[str, _Entry]) -> set[str]:
    """Every directory the names lie in."""
    found: set[str] = set()
    for name in names:
        while "/" in name:
            name = name.rpartition("/")[0]
            if name in found:
                break
            found.add(name)
    return found


def _write(entries: dict[str, _Entry], out: HashingWriter) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name in sorted(entries, key=_order):
            entry = entries[name]
            if entry.content is None:
                tar.addfile(entry.info)
            else:
                source, member = entry.content
                tar.addfile(entry.info, source.extractfile(member))


def _header(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """``member``'s header under ``name``. PAX records that tarfile writes from the header's
    fields are dropped (a stale ``path`` would win over the new name), as is a sparse map:
    the content is written out whole."""
    info = copy.copy(member)
    info.name = name
    if member.islnk():
        info.linkname = _path(member.linkname)
    if member.issparse():
        info.type, info.sparse = tarfile.REGTYPE, None
    info.pax_headers = {
        key: value
        for key, value in member.pax_headers.items()
        if key not in tarfile.PAX_FIELDS and not key.startswith("GNU.sparse.")
    }
    return info


def _path(name: str) -> str:
    """A layer entry's path, normalised: no leading ``./`` or ``/``, no trailing ``/``."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise SquashError(f"layer entry {name!r} escapes the layer")
    return "/".join(parts)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _sealed_above(path: str, sealed: set[str]) -> bool:
    while "/" in path:
        path = path.rpartition("/")[0]
        if path in sealed:
            return True
    return False


def _order(name: str) -> tuple[tuple[int, bytes], ...]:
    """kiln's layer order: byte-wise, parents before children, and in each directory its
    opaque marker, then its whiteouts, then the rest (whiteouts apply before the entries
    beside them)."""
    return tuple(
        (
            0 if part == OPAQUE_MARKER else 1 if part.startswith(WHITEOUT_PREFIX) else 2,
            part.encode("utf-8", "surrogateescape"),
        )
        for part in name.split("/")
    )
