"""Layer tars: written from a directory in a fixed order, read back as a stream.

Entries are sorted byte-wise with parents first, owners are numeric with no names, mtimes
are whole seconds, hard links point at the first path of their inode, and extended
attributes (``security.capability`` among them) travel as PAX ``SCHILY.xattr`` records.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import mmap
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from kiln.errors import KilnError
from kiln.oci.uncached import read_uncached

# xattrs that describe the host, not the image.
_SKIPPED_XATTRS = ("security.selinux", "system.nfs4_acl")
_SKIPPED_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
# The same for GNU tar. overlayfs's own (origin: a file handle of the store's filesystem) would
# make a copied-up file's layer differ from one store to the next.
_GNU_TAR_XATTR_EXCLUDES = tuple(
    f"--xattrs-exclude={pattern}"
    for pattern in (*_SKIPPED_XATTRS, *(f"{prefix}*" for prefix in _SKIPPED_XATTR_PREFIXES))
)


class LayerError(KilnError):
    """A layer that cannot be written or read."""


@dataclass(frozen=True)
class LayerInfo:
    """The uncompressed layer's digest (its diff_id) and size."""

    diff_id: str
    size: int


class HashingWriter:
    """A write-only file that hashes and counts what passes through it. A large chunk that
    cannot change (bytes, a read-only view) is hashed on another thread while the file
    takes it: on a layer of a hundred megabytes that halves the time to store it."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0
        self._hashing: Future[None] | None = None

    @classmethod
    def over(cls, out: BinaryIO) -> HashingWriter:
        """``out`` itself when it is a HashingWriter with nothing written yet, so what is
        written is hashed once; else a HashingWriter writing to it."""
        if isinstance(out, HashingWriter) and out.size == 0:
            return out
        return cls(out)

    def write(self, data: bytes | memoryview) -> int:
        self.settle()
        if len(data) >= _OVERLAPPED and (isinstance(data, bytes) or data.readonly):
            self._hashing = _hash_pool().submit(self.hash.update, data)
        else:
            self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)

    def settle(self) -> None:
        """Wait for the hash to take everything written so far (before a written view's
        memory goes away)."""
        if self._hashing is not None:
            self._hashing.result()
            self._hashing = None

    def flush(self) -> None:
        self.target.flush()

    @property
    def digest(self) -> str:
        self.settle()
        return "sha256:" + self.hash.hexdigest()


_OVERLAPPED = 256 << 10


@functools.cache
def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="kiln-hash")


# Whether a directory of an upper dir only mirrors the lower one (copied up, then left as it was).
Unchanged = Callable[[str, os.stat_result], bool]


def write_dir_layer(
    root: Path,
    out: BinaryIO,
    *,
    overlay: bool = False,
    unchanged: Unchanged | None = None,
    clamp: int | None = None,
) -> LayerInfo:
    """Write everything below ``root`` (not ``root`` itself) to ``out`` as a layer tar.

    With ``clamp`` (a SOURCE_DATE_EPOCH), mtimes later than it are written as ``clamp``, as
    BuildKit's ``rewrite-timestamp`` does: a build that ran later still gives the same tar.

    With ``overlay``, ``root`` is an overlayfs upper dir: a 0/0 character device becomes a
    ``.wh.<name>`` whiteout and an opaque directory gets a ``.wh..wh..opq`` marker, each
    written before the other entries of its directory; an empty directory that ``unchanged``
    says matches the lower one is left out.
    """
    writer = HashingWriter.over(out)
    if written_by_gnu_tar(root, overlay=overlay, unchanged=unchanged):
        _gnu_tar(root, writer, clamp)
        return LayerInfo(writer.digest, writer.size)
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for relative, path in _walk(root, "", overlay):
            if unchanged is not None and _mirrors_lower(path, relative, unchanged):
                continue
            if overlay and relative.rpartition("/")[2].startswith(WHITEOUT_PREFIX):
                _add_whiteout(tar, relative)
            else:
                _add_entry(tar, path, relative, links, clamp)
    return LayerInfo(writer.digest, writer.size)


def written_by_gnu_tar(
    root: Path, *, overlay: bool = False, unchanged: Unchanged | None = None
) -> bool:
    """Whether ``write_dir_layer`` gives this tree to GNU tar (see ``splice_dir_layer``)."""
    return bool(shutil.which("tar")) and not (overlay and _needs_conversion(root, unchanged))


def _needs_conversion(root: Path, unchanged: Unchanged | None) -> bool:
    """Whether an upper dir holds whiteouts, opaque dirs or copied-up empty dirs, which
    only the Python writer knows how to turn into a layer. Only what readdir does not
    already show to be a file, a directory or a symlink is stat'ed."""
    pending = [str(root)]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as listing:
            children = list(listing)
        if directory != str(root) and (is_opaque(Path(directory)) or (not children and unchanged)):
            return True
        for child in children:
            if child.is_dir(follow_symlinks=False):
                pending.append(child.path)
            elif (
                not child.is_file(follow_symlinks=False)
                and not child.is_symlink()
                and is_whiteout(Path(child.path))
            ):
                return True
    return False


def _gnu_tar(
    root: Path, writer: HashingWriter, clamp: int | None, only: list[bytes] | None = None
) -> None:
    """The same layer semantics, written by GNU tar: several times faster than tarfile for
    thousands of files. Sorted, numeric owners, whole-second mtimes, no atime/ctime, xattrs.
    With ``only``: just those paths, in that order, each on its own (no recursion)."""
    names = sorted(os.listdir(root), key=os.fsencode) if only is None else []
    if only is None and not names:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT):  # type: ignore[call-overload]
            return
    listed = ("--no-recursion", "--null", "--files-from=-") if only is not None else ()
    command = [
        "tar", "--create", "--file=-", f"--directory={root}", "--format=pax", "--sort=name",
        "--numeric-owner", "--xattrs", "--xattrs-include=*", *_GNU_TAR_XATTR_EXCLUDES,
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime,delete=mtime",
        "--no-acls", "--no-selinux", *listed,
        *(("--clamp-mtime", f"--mtime=@{clamp}") if clamp is not None else ()), "--", *names,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE if only is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    if only is not None:
        feeder = threading.Thread(target=_feed, args=(process, b"".join(n + b"\0" for n in only)))
        feeder.start()
    while chunk := process.stdout.read(1 << 20):
        writer.write(chunk)
    if only is not None:
        feeder.join()
        process.stdin = None  # closed by the feeder: nothing for communicate to flush
    _, errors = process.communicate()
    if process.returncode != 0:
        raise LayerError(f"tar failed on {root}: {errors.decode(errors='replace').strip()}")


def _feed(process: subprocess.Popen[bytes], data: bytes) -> None:
    assert process.stdin is not None
    with process.stdin:
        process.stdin.write(data)


_BLOCK = 512
_RECORD = 20 * _BLOCK  # GNU tar's default blocking: the archive ends on a multiple of it
_ZERO_BLOCK = bytes(_BLOCK)  # two of them end an archive


def splice_dir_layer(
    root: Path, out: BinaryIO, previous: Path, kept: set[str], *, clamp: int | None = None
) -> LayerInfo | None:
    """``write_dir_layer(root)``'s exact bytes, most of them taken from ``previous``: the
    layer GNU tar wrote of a tree in which every path of ``kept`` (files and symlinks of
    ``root``, relative) was the very inode it is in ``root``, so their entries are the
    same bytes. Only the other entries are written by GNU tar again (one path at a time, in
    the order a whole run visits them). None where ``previous`` lacks one of them."""
    order = _tar_order(root)
    fresh = [path for path, _ in order if path not in kept]
    for path in fresh:  # a hard link to a kept file: GNU tar would have written a link entry
        st = os.lstat(root / path)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            return None
    old, old_index = _read_tar(previous)
    if any(old_index.get(p, (0, 0, b"1"))[2] not in (b"0", b"2") for p in kept):
        return None  # missing, or a hard link entry (its first path is not kept)
    return _spliced(out, root, fresh, clamp, order, kept, old, old_index)


def splice_delta_layer(
    delta: Path, out: BinaryIO, previous: Path, *, clamp: int | None = None
) -> LayerInfo | None:
    """The layer tar of a copy made as a delta (see ``kiln.engine.snapshots``): ``delta``'s
    entries over those of ``previous``, the tar GNU tar wrote of the snapshot it is the
    changes from, minus what its whiteouts delete; byte for byte ``write_dir_layer`` of the
    two merged. Only the delta's own entries are written by GNU tar, and no tree is walked
    but the delta's. None where it takes the merged tree: hard links, opaque or empty
    directories, entries ``previous`` lacks."""
    fresh: list[tuple[str, bool]] = []
    removed: set[str] = set()
    for relative, where in _walk(delta, "", overlay=False):
        st = os.lstat(where)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout
            removed.add(relative)
        elif (stat.S_ISDIR(st.st_mode) and is_opaque(where)) or (
            not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1
        ):
            return None
        else:
            fresh.append((relative, stat.S_ISDIR(st.st_mode)))
    written = {path for path, _ in fresh}
    # gone with all below them: what is deleted, and what a file or symlink replaced
    hidden = removed | {path for path, is_dir in fresh if not is_dir}
    old, old_index = _read_tar(previous)
    kept: list[tuple[str, bool]] = []  # in the old tar's order, which is GNU tar's
    gone = ""  # the hidden path whose entries (next in the tar) are being passed
    for name, (_, _, kind) in old_index.items():
        path = name.rstrip("/")
        if gone and path.startswith(gone):
            continue
        gone = path + "/" if path in hidden else ""
        if gone or path in written:
            continue
        if kind not in (b"0", b"2", b"5"):
            return None  # a hard link, a device: not what a copy of GNU tar's makes
        kept.append((path, kind == b"5"))
    order = _merged(kept, sorted(fresh, key=_tar_key))
    parents = {path.rpartition("/")[0] for path, _ in order}
    if any(is_dir and path not in parents for path, is_dir in order):
        return None  # an empty directory: the Python writer's (see _needs_conversion)
    fresh_paths = [path for path, _ in fresh]
    return _spliced(out, delta, fresh_paths, clamp, order, {p for p, _ in kept}, old, old_index)


def _read_tar(path: Path) -> tuple[mmap.mmap | None, dict[str, tuple[int, int, bytes]]]:
    """A layer tar GNU tar wrote, read whole (around the page cache), and its index."""
    with open(path, "rb") as file:
        data = read_uncached(file.fileno())  # (still there once the file is closed)
    return data, _tar_index(data) if data is not None else {}


def _spliced(
    out: BinaryIO,
    root: Path,
    fresh: list[str],
    clamp: int | None,
    order: list[tuple[str, bool]],
    kept: set[str],
    old: mmap.mmap | None,
    old_index: dict[str, tuple[int, int, bytes]],
) -> LayerInfo | None:
    """The entries ``order`` lists: the ``fresh`` ones (below ``root``) written by GNU tar,
    the ``kept`` ones taken from the old tar (see ``_assemble``)."""
    with tempfile.TemporaryFile() as partial:
        _gnu_tar(root, HashingWriter(partial), clamp, [os.fsencode(p) for p in fresh])
        partial.flush()
        new = mmap.mmap(partial.fileno(), 0, access=mmap.ACCESS_READ) if fresh else None
        new_index = _tar_index(new) if new is not None else {}
        return _assemble(out, order, kept, old, old_index, new, new_index)


def _tar_key(entry: tuple[str, bool]) -> list[bytes]:
    """Where an entry comes in GNU tar's ``--sort=name`` order (see ``_tar_order``)."""
    return os.fsencode(entry[0]).split(b"/")


def _merged(ordered: list[tuple[str, bool]], few: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Two lists in tar order as one: ``few`` placed into ``ordered`` by binary search."""
    merged: list[tuple[str, bool]] = []
    start = 0
    for entry in few:
        at = bisect.bisect_left(ordered, _tar_key(entry), lo=start, key=_tar_key)
        merged += ordered[start:at]
        merged.append(entry)
        start = at
    return merged + ordered[start:]


def _assemble(
    out: BinaryIO,
    order: list[tuple[str, bool]],
    kept: set[str],
    old: mmap.mmap | None,
    old_index: dict[str, tuple[int, int, bytes]],
    new: mmap.mmap | None,
    new_index: dict[str, tuple[int, int, bytes]],
) -> LayerInfo | None:
    """A tar of the entries ``order`` lists, each copied from the old tar if ``kept``, else
    from the new one (or the old one still, where it has the same bytes); None where one
    is missing from its tar."""
    pieces: list[tuple[mmap.mmap, int, int]] = []
    for path, is_dir in order:
        name = path + ("/" if is_dir else "")
        source, index = (old, old_index) if path in kept else (new, new_index)
        if source is None or name not in index:
            return None
        start, end, _ = index[name]
        if source is new and old is not None and name in old_index:
            # written again, but perhaps to the same bytes (a directory, mostly, whose
            # files changed but not its own metadata): then one run of the old tar
            # goes on past it
            old_start, old_end, _ = old_index[name]
            if old[old_start:old_end] == new[start:end]:
                source, start, end = old, old_start, old_end
        if pieces and pieces[-1][0] is source and pieces[-1][2] == start:
            pieces[-1] = (source, pieces[-1][1], end)  # runs of entries: one copy each
        else:
            pieces.append((source, start, end))
    writer = HashingWriter.over(out)
    for source, start, end in pieces:
        view = memoryview(source).toreadonly()  # (so that it is hashed beside the write)
        for chunk in range(start, end, 8 << 20):
            writer.write(view[chunk : min(chunk + (8 << 20), end)])
        writer.settle()  # (before the view is released)
        view.release()
    writer.write(bytes(2 * _BLOCK))
    writer.write(bytes(-writer.size % _RECORD))
    return LayerInfo(writer.digest, writer.size)


def _tar_order(root: Path) -> list[tuple[str, bool]]:
    """(path, is a directory) of every entry below ``root`` in the order GNU tar's
    ``--sort=name`` archives them: names byte-wise, a directory before its contents."""
    order: list[tuple[str, bool]] = []

    def visit(directory: str, prefix: str) -> None:
        with os.scandir(directory) as listing:
            children = sorted(listing, key=lambda e: os.fsencode(e.name))
        for child in children:
            path = prefix + child.name
            is_dir = child.is_dir(follow_symlinks=False)
            order.append((path, is_dir))
            if is_dir:
                visit(child.path, path + "/")

    visit(str(root), "")
    return order


def _tar_index(data: mmap.mmap) -> dict[str, tuple[int, int, bytes]]:
    """Each entry of a tar GNU tar wrote, by its name (directories end in /): where its
    bytes start (its PAX header, if it has one) and end (its data's last block), and its
    type flag. (Tens of thousands of entries: a header is read in as few steps as can be.)"""
    index: dict[str, tuple[int, int, bytes]] = {}
    offset, start, long_name = 0, 0, ""
    while offset + _BLOCK <= len(data):
        header = data[offset : offset + 500]  # (the last 12 bytes are padding)
        if not header[0] and data[offset : offset + _BLOCK] == _ZERO_BLOCK:
            break
        size = _octal(header[124:136])
        kind = header[156:157]
        data_end = offset + _BLOCK + ((size + _BLOCK - 1) & -_BLOCK)
        if kind == b"x":  # the next entry's PAX header: its own name may be in it
            long_name = _pax_path(data[offset + _BLOCK : offset + _BLOCK + size]) or ""
            offset = data_end
            continue
        if not long_name:
            name = header[0:100].partition(b"\0")[0]
            if header[345]:
                name = header[345:500].partition(b"\0")[0] + b"/" + name
            long_name = os.fsdecode(name)
        index[long_name] = (start, data_end, kind)
        offset = start = data_end
        long_name = ""
    return index


def _octal(field: bytes) -> int:
    if field[0] & 0x80:  # base-256, for sizes past 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_path(records: bytes) -> str | None:
    """The ``path`` record of a PAX extended header ("LEN path=VALUE\\n")."""
    offset = 0
    while offset < len(records):
        length_text, _, _ = records[offset:].partition(b" ")
        length = int(length_text)
        record = records[offset : offset + length]
        key, _, value = record[len(length_text) + 1 : -1].partition(b"=")
        if key == b"path":
            return os.fsdecode(value)
        offset += length
    return None


WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


def _walk(directory: Path, relative: str, overlay: bool) -> Iterator[tuple[str, Path]]:
    """(relative name, path) below ``directory``, depth first, sorted byte-wise; with
    ``overlay``, whiteouts (renamed ``.wh.*``) come first in each directory."""
    try:
        names = sorted(os.listdir(directory), key=os.fsencode)
    except OSError as err:
        raise LayerError(f"cannot read {directory}: {err.strerror}") from None
    prefix = f"{relative}/" if relative else ""
    if overlay:
        if relative and is_opaque(directory):
            yield prefix + OPAQUE_MARKER, directory
        whiteouts = [n for n in names if is_whiteout(directory / n)]
        for name in whiteouts:
            yield prefix + WHITEOUT_PREFIX + name, directory / name
        names = [n for n in names if n not in set(whiteouts)]
    for name in names:
        child = directory / name
        yield prefix + name, child
        if child.is_dir() and not child.is_symlink():
            yield from _walk(child, prefix + name, overlay)


def _mirrors_lower(path: Path, relative: str, unchanged: Unchanged) -> bool:
    st = os.lstat(path)
    return (
        stat.S_ISDIR(st.st_mode)
        and not os.listdir(path)
        and not is_opaque(path)
        and unchanged(relative, st)
    )


def is_whiteout(path: Path) -> bool:
    """Whether ``path`` is an overlayfs whiteout: a 0/0 character device."""
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path) -> bool:
    """Whether ``path`` is a directory overlayfs marks opaque (it hides the layers below)."""
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _add_whiteout(tar: tarfile.TarFile, name: str) -> None:
    """An empty file with fixed metadata, so equal deletions give equal layers."""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uname, info.gname = 0o644, 0, "", ""
    tar.addfile(info)


def _add_entry(
    tar: tarfile.TarFile,
    path: Path,
    name: str,
    links: dict[tuple[int, int], str],
    clamp: int | None,
) -> None:
    st = os.lstat(path)
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime) if clamp is None else min(int(st.st_mtime), clamp)
    info.pax_headers = _xattrs(path)
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
            tar.addfile(info)
            return
        links[key] = name
        info.size = st.st_size
        with open(path, "rb") as f:
            tar.addfile(info, f)
        return
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return  # sockets cannot be archived
    tar.addfile(info)


def _xattrs(path: Path) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    records = {}
    for name in sorted(names):
        if name in _SKIPPED_XATTRS or name.startswith(_SKIPPED_XATTR_PREFIXES):
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        if value:
            records["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return records


def open_decompressed(path: Path) -> IO[bytes]:
    """A tar file, compressed with gzip, bzip2, xz or zstd or not at all, as a raw stream.

    The codecs are imported here, when one is needed: most commands never need one.
    """
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        import gzip

        return cast(IO[bytes], gzip.open(path, "rb"))
    if magic.startswith(b"BZh"):
        import bz2

        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return lzma.open(path, "rb")
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")
