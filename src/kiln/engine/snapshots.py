"""Unpacked layers: one directory per layer, in overlayfs's on-disk format.

A layer's directory holds exactly its diff: OCI whiteouts become 0/0 character devices and
``.wh..wh..opq`` becomes the ``trusted.overlay.opaque`` xattr, so a stack of these
directories can be mounted as overlayfs lower dirs as they are. Layers kiln builds itself
are already in this form (they are the upper dirs of RUN steps) and are adopted, not
unpacked. A directory is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from kiln.errors import KilnError
from kiln.oci.layer import OPAQUE_MARKER, WHITEOUT_PREFIX, open_decompressed
from kiln.store.store import Store


class SnapshotError(KilnError):
    """A layer that cannot be unpacked safely."""


class Snapshots:
    """The unpacked layers of a store, by diff_id, under ``ROOT/snapshots``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "snapshots"
        self.root.mkdir(exist_ok=True)

    def path(self, diff_id: str) -> Path:
        return self.root / diff_id.removeprefix("sha256:")

    def get(self, diff_id: str) -> Path:
        """The directory of a stored layer, unpacking it the first time it is asked for."""
        target = self.path(diff_id)
        if target.is_dir():
            return target
        with open_decompressed(self.store.blob_path(diff_id)) as blob, self.staging() as staging:
            unpack_layer(blob, staging)
            self.adopt(staging, diff_id)
        return target

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory beside the snapshots; removed unless adopted."""
        path = Path(tempfile.mkdtemp(prefix="staging-", dir=self.root))
        path.chmod(0o755)  # a layer's root is "/" of the images built on it
        try:
            yield path
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)

    def adopt(self, directory: Path, diff_id: str) -> Path:
        """Make ``directory`` (an overlay-format diff) the snapshot of ``diff_id``."""
        target = self.path(diff_id)
        try:
            directory.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent unpack of the same layer: a real error
                raise
        return target


def unpack_layer(
    stream: IO[bytes],
    dest: Path,
    *,
    whiteouts: bool = True,
    owner: tuple[int, int] | None = None,
) -> None:
    """Unpack a layer tar into ``dest`` in overlay format, confined to ``dest``.

    For ``ADD`` of an archive, ``whiteouts`` is off (``.wh.`` names are plain files) and
    ``owner``, when given, replaces the archive's owners.
    """
    directories: list[tuple[Path, tarfile.TarInfo]] = []
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            parts = _parts(member.name)
            if not parts:
                continue
            parent = _parent(dest, parts[:-1])
            name = parts[-1]
            if owner is not None:
                member.uid, member.gid = owner
            if whiteouts and name == OPAQUE_MARKER:
                os.setxattr(parent, "trusted.overlay.opaque", b"y")
                continue
            if whiteouts and name.startswith(WHITEOUT_PREFIX):
                whiteout = parent / name[len(WHITEOUT_PREFIX) :]
                _remove(whiteout)
                os.mknod(whiteout, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                continue
            path = parent / name
            if member.isdir():
                if not path.is_dir() or path.is_symlink():
                    _remove(path)
                    path.mkdir()
                directories.append((path, member))
                continue
            _remove(path)
            if member.isreg():
                source = tar.extractfile(member)
                with open(path, "xb") as out:
                    if source is not None:
                        shutil.copyfileobj(source, out, 1 << 20)
            elif member.issym():
                os.symlink(member.linkname, path)
            elif member.islnk():
                target = _parent(dest, _parts(member.linkname)[:-1]) / _parts(member.linkname)[-1]
                os.link(target, path, follow_symlinks=False)
                continue  # a hard link shares its target's metadata
            elif member.ischr() or member.isblk():
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                os.mknod(path, kind | member.mode, os.makedev(member.devmajor, member.devminor))
            elif member.isfifo():
                os.mkfifo(path, member.mode)
            else:
                raise SnapshotError(f"layer entry {member.name!r} has an unsupported type")
            _apply_metadata(path, member)
    for path, member in reversed(directories):  # children first: their writes bump mtimes
        _apply_metadata(path, member)


def _parts(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SnapshotError(f"layer entry {name!r} escapes the layer")
    return parts


def _parent(dest: Path, parts: list[str]) -> Path:
    """``dest/parts...``, creating missing directories, never through a symlink."""
    path = dest
    for part in parts:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise SnapshotError(f"layer entry below {path.relative_to(dest)} is not in a directory")
    return path


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _apply_metadata(path: Path, member: tarfile.TarInfo) -> None:
    os.chown(path, member.uid, member.gid, follow_symlinks=False)
    if not member.issym():
        os.chmod(path, member.mode)
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key.removeprefix("SCHILY.xattr.")
            with contextlib.suppress(OSError):
                os.setxattr(
                    path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False
                )
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
