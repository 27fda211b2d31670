"""Unpacked layers: one directory per layer, in overlayfs's on-disk format.

A layer's directory holds exactly its diff: OCI whiteouts become 0/0 character devices and
``.wh..wh..opq`` becomes the ``trusted.overlay.opaque`` xattr, so a stack of these
directories can be mounted as overlayfs lower dirs as they are. Layers kiln builds itself
are already in this form (they are the upper dirs of RUN steps) and are adopted, not
unpacked. A directory is renamed into place only when complete.

Layers and archives are untrusted: every entry is written through ``kiln.tree``, relative
to a descriptor of its directory, and never through a symlink; directories' metadata,
applied last, goes only to what is still the directory the entry made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from kiln import tree
from kiln.engine.workspace import workspace
from kiln.errors import KilnError
from kiln.oci.layer import OPAQUE_MARKER, OPAQUE_XATTRS, WHITEOUT_PREFIX, open_decompressed
from kiln.oci.objects import parse_digest
from kiln.store.store import Store
from kiln.tree import Tree, TreeError

_OPAQUE = "trusted.overlay.opaque"
# xattrs a layer may not set: overlayfs's own (they would redirect or hide lower layers)
# and the trusted namespace, which describes the host.
_REFUSED_XATTRS = ("trusted.", "user.overlay.")
_MAX_ID = (1 << 32) - 2


class SnapshotError(KilnError):
    """A layer that cannot be unpacked safely."""


class Snapshots:
    """The unpacked layers of a store, by diff_id, under ``ROOT/snapshots``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "snapshots"
        self.root.mkdir(exist_ok=True)
        self._check_boot()

    def _check_boot(self) -> None:
        """Snapshots are written without syncing (an overlay's upper dir is mounted
        ``volatile``, renames are not synced): they hold only for the boot that wrote them.
        After a reboot (a crash, perhaps, that left them half written) they are dropped, to
        be unpacked again from their blobs, which are synced."""
        marker = self.root / _BOOT
        boot = _boot_id()
        if _read(marker) == boot:
            return
        with self.store.lock():
            if _read(marker) == boot:
                return  # another process of this boot did it meanwhile
            suspect = [p for p in self.root.iterdir() if p.name != _BOOT]
            if suspect:
                trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.store.root / "work"))
                for path in suspect:
                    path.rename(trash / path.name)
                shutil.rmtree(trash, ignore_errors=True)
            self.store.write_atomic(marker, boot.encode())

    def path(self, diff_id: str) -> Path:
        return self.root / parse_digest(diff_id, "layer").removeprefix("sha256:")

    def delta_path(self, diff_id: str) -> Path:
        """Where a layer kept as the changes from another one is (see ``adopt_delta``)."""
        whole = self.path(diff_id)
        return whole.with_name(whole.name + DELTA)

    def has(self, diff_id: str) -> bool:
        """Whether the layer is here, whole or as a delta."""
        return self.path(diff_id).is_dir() or self._delta(diff_id) is not None

    def lowers(self, diff_ids: Sequence[str]) -> list[Path]:
        """The directories that mount as these layers (bottom first): one per layer, or a
        delta's base and then its changes; unpacked the first time they are asked for."""
        found: list[Path] = []
        for diff_id in diff_ids:
            delta = None if self.path(diff_id).is_dir() else self._delta(diff_id)
            found += [self.path(delta[0]), delta[1]] if delta else [self.get(diff_id)]
        return found

    def _delta(self, diff_id: str) -> tuple[str, Path] | None:
        """(base, changes) of a layer kept as a delta whose base is here whole."""
        path = self.delta_path(diff_id)
        base = _read(path / "base")
        if not base or not (path / "tree").is_dir():
            return None
        try:
            whole = self.path(base).is_dir()
        except KilnError:
            return None
        return (base, path / "tree") if whole else None

    def get(self, diff_id: str) -> Path:
        """The directory of a stored layer, whole, unpacking it the first time it is asked
        for (a layer kept as a delta is unpacked whole beside it)."""
        target = self.path(diff_id)
        if target.is_dir():
            return target
        with open_decompressed(self.store.blob_path(diff_id)) as blob, self.staging() as staging:
            with Tree(staging) as dest:
                unpack_layer(blob, dest)
            self.adopt(staging, diff_id)
        return target

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory on the snapshots' filesystem, in a workspace of its own (so
        that a process killed while unpacking leaves nothing the next one keeps)."""
        with workspace(self.store.root, "unpack") as scratch:
            path = scratch.path / "layer"
            path.mkdir(mode=0o755)  # a layer's root is "/" of the images built on it
            yield path

    def adopt(self, directory: Path, diff_id: str) -> Path:
        """Make ``directory`` (an overlay-format diff) the snapshot of ``diff_id``."""
        target = self.path(diff_id)
        try:
            directory.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent unpack of the same layer: a real error
                raise
        return target

    def adopt_delta(self, directory: Path, diff_id: str, base: str) -> None:
        """Make ``directory`` the snapshot of ``diff_id`` as the changes from ``base``, a
        layer whose snapshot is here whole: files left as they were are only in ``base``,
        deleted ones are whiteouts. Mounted as ``base`` then ``directory``, the two are the
        layer; this takes a file creation per changed file, where a whole snapshot takes one
        per file. A base is never taken away while a delta on it is kept (see
        ``Store.prune``)."""
        if self.has(diff_id):
            return
        with workspace(self.store.root, "delta") as scratch:
            staging = scratch.path / "delta"
            staging.mkdir()
            (staging / "base").write_text(base)
            directory.rename(staging / "tree")
            try:
                staging.rename(self.delta_path(diff_id))
            except OSError:
                if not self.has(diff_id):  # not a concurrent build of the same layer
                    raise


_BOOT = ".boot-id"
DELTA = ".delta"  # a snapshot kept as the changes from another: DIFF_ID.delta/{base,tree}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# -- applying layers ---------------------------------------------------------------------------


@dataclass
class Member:
    """One entry of a layer, from a tar or from an unpacked layer's directory."""

    parts: list[str]  # its path, cleaned, relative to where the layer goes
    kind: str  # dir, file, symlink, hardlink, char, block, fifo, whiteout, opaque
    mode: int = 0o644
    owner: tree.Owner = (0, 0)
    mtime_ns: int = 0
    link: str = ""  # a symlink's target; a hard link's path (relative to the layer)
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


# How a layer's whiteouts and opaque markers are taken: kept in overlay's format (a layer's
# own directory), applied (deleting, onto a merged tree), or not at all (an ADDed archive,
# where ".wh." names are plain files).
OVERLAY, MERGE, PLAIN = "overlay", "merge", "plain"


class Applier:
    """Writes ``Member``s into a tree. ``links``: whether symlinks on an entry's way are
    followed (inside the tree: an ADDed archive) or refused (a layer writes through none).

    Parent directories are looked up once and kept by path; anything that removes or
    replaces a directory forgets them all, so that no entry lands in a directory that is
    no longer part of the tree."""

    def __init__(self, dest: Tree, mode: str, *, links: bool = False) -> None:
        self.dest = dest
        self.mode = mode
        self.links = links
        self.parents: dict[tuple[str, ...], int] = {}
        self.directories: list[Member] = []

    def close(self) -> None:
        self._forget()

    def _forget(self) -> None:
        for fd in self.parents.values():
            os.close(fd)
        self.parents.clear()

    def _parent(self, parts: list[str]) -> int:
        key = tuple(parts)
        found = self.parents.get(key)
        if found is None:
            if len(self.parents) > 256:
                self._forget()
            try:
                found = self.dest.directory("/".join(parts), make=(0, 0), links=self.links)
            except (NotADirectoryError, FileExistsError):
                raise SnapshotError(
                    f"layer entry below {'/'.join(parts)} is not in a directory"
                ) from None
            self.parents[key] = found
        return found

    def _clear_way(self, parent: int, name: str, keep_dir: bool = False) -> bool:
        """Remove what is at ``name`` (unless it is a directory and ``keep_dir``); whether
        a directory is there afterwards."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._forget()  # a directory kept by path may lie below it
        tree.remove(parent, name)
        return False

    def apply(self, member: Member, content: Callable[[int], None] | None = None) -> None:
        if not member.parts:
            return
        *above, name = member.parts
        if member.kind == "whiteout" and self.mode == MERGE:
            try:  # a deletion below a directory that is not there deletes nothing
                entry = self.dest.entry("/".join(member.parts), links=False)
            except (FileNotFoundError, NotADirectoryError, TreeError):
                return
            with tree.opened(entry.parent):
                self._clear_way(entry.parent, entry.name)
            return
        # A descriptor of its own: clearing the way may forget the ones kept by path.
        with tree.opened(os.dup(self._parent(above))) as parent:
            self._apply_in(member, parent, name, content)

    def _apply_in(
        self, member: Member, parent: int, name: str, content: Callable[[int], None] | None
    ) -> None:
        if member.kind == "opaque":
            if self.mode == OVERLAY:
                os.setxattr(tree.proc_path(parent), _OPAQUE, b"y")
            elif self.mode == MERGE:
                self._forget()
                tree.clear(parent)
            return
        if member.kind == "whiteout":
            self._clear_way(parent, name)
            if self.mode == OVERLAY:
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
            return
        if member.kind == "dir":
            if not self._clear_way(parent, name, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=parent)  # its mode is set once its entries are in
            where = self.dest.relative(parent)
            if where is not None:  # remembered where it is, whatever way the entry took
                self.directories.append(replace(member, parts=[*tree.clean(where), name]))
            return
        self._clear_way(parent, name)
        if member.kind == "file":
            with tree.opened(tree.create_file(parent, name)) as fd:
                if content is not None:
                    content(fd)
                os.fchown(fd, *member.owner)
                os.fchmod(fd, member.mode)
                for key, value in member.xattrs.items():
                    with contextlib.suppress(OSError):
                        os.setxattr(fd, key, value)
                os.utime(fd, ns=(member.mtime_ns, member.mtime_ns))
            return
        if member.kind == "hardlink":
            self._hard_link(member, parent, name)
            return  # a hard link shares its target's metadata
        if member.kind == "symlink":
            os.symlink(member.link, name, dir_fd=parent)
        elif member.kind in ("char", "block"):
            kind = stat.S_IFCHR if member.kind == "char" else stat.S_IFBLK
            os.mknod(name, kind | member.mode, member.rdev, dir_fd=parent)
        elif member.kind == "fifo":
            os.mkfifo(name, member.mode, dir_fd=parent)
        else:
            raise SnapshotError(f"layer entry {'/'.join(member.parts)!r} has an unsupported type")
        tree.set_metadata(
            parent, name, owner=member.owner,
            mode=None if member.kind == "symlink" else member.mode,
            mtime_ns=member.mtime_ns, xattrs=member.xattrs,
        )  # fmt: skip

    def _hard_link(self, member: Member, parent: int, name: str) -> None:
        where = "/".join(member.parts)
        target = tree.clean(member.link)
        if not target:
            raise SnapshotError(f"layer entry {where!r} is a hard link to nothing")
        try:
            entry = self.dest.entry("/".join(target), links=self.links)
        except (FileNotFoundError, NotADirectoryError, TreeError):
            entry = None
        if entry is None or entry.lstat() is None:
            if entry is not None:
                entry.close()
            raise SnapshotError(
                f"layer entry {where!r} is a hard link to {member.link!r}, which the layer "
                "does not hold before it"
            )
        with tree.opened(entry.parent):
            try:
                os.link(entry.name, name, src_dir_fd=entry.parent, dst_dir_fd=parent,
                        follow_symlinks=False)  # fmt: skip
            except OSError as err:
                raise SnapshotError(
                    f"layer entry {where!r}: cannot link to {member.link!r}: {err.strerror}"
                ) from None

    def finish(self) -> None:
        """Directories' metadata, children first (their entries bumped the mtimes). A
        directory that a later entry replaced (by a symlink, say) is left alone: the
        metadata was meant for the directory, never for what the symlink names."""
        self._forget()
        for member in reversed(self.directories):
            try:
                entry = self.dest.entry("/".join(member.parts), links=False)
            except (FileNotFoundError, NotADirectoryError, TreeError):
                continue
            with tree.opened(entry.parent):
                st = entry.lstat()
                if st is None or not stat.S_ISDIR(st.st_mode):
                    continue
                tree.set_metadata(
                    entry.parent, entry.name, owner=member.owner, mode=member.mode,
                    mtime_ns=member.mtime_ns, xattrs=member.xattrs,
                )  # fmt: skip
        self.directories.clear()


def unpack_layer(
    stream: IO[bytes],
    dest: Tree,
    *,
    whiteouts: bool = True,
    owner: tree.Owner | None = None,
) -> None:
    """Unpack a layer tar into ``dest`` in overlay format, confined to ``dest``.

    For ``ADD`` of an archive, ``whiteouts`` is off (``.wh.`` names are plain files, and
    symlinks the archive makes are followed, inside ``dest``, by the entries after them)
    and ``owner``, when given, replaces the archive's owners.
    """
    applier = Applier(dest, OVERLAY if whiteouts else PLAIN, links=not whiteouts)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                member = _member(info, whiteouts)
                if member is None:
                    continue
                if owner is not None:
                    member.owner = owner
                source = tar.extractfile(info) if member.kind == "file" else None
                applier.apply(member, None if source is None else _writer(source))
        applier.finish()
    except (tarfile.TarError, EOFError, ValueError) as err:
        raise SnapshotError(f"malformed layer archive: {err}") from None
    except TreeError as err:
        raise SnapshotError(f"layer: {err}") from None
    except OSError as err:
        raise SnapshotError(f"cannot unpack layer: {err.strerror or err}") from err
    finally:
        applier.close()


def _writer(source: IO[bytes]) -> Callable[[int], None]:
    def write(fd: int) -> None:
        while block := source.read(1 << 20):
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]

    return write


def _member(info: tarfile.TarInfo, whiteouts: bool) -> Member | None:
    """A tar entry as a ``Member``; None for one to skip (aufs's own metadata)."""
    raw = [p for p in info.name.split("/") if p not in ("", ".")]
    if ".." in raw:
        raise SnapshotError(f"layer entry {info.name!r} escapes the layer")
    if not raw:
        return None
    name = raw[-1]
    if whiteouts and name.startswith(WHITEOUT_PREFIX):
        if name == OPAQUE_MARKER:
            return Member([*raw[:-1], "."], "opaque")
        if name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return None  # .wh..wh.plnk and friends: aufs's bookkeeping, as Docker skips it
        hidden = name[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise SnapshotError(f"layer entry {info.name!r} is not a valid whiteout")
        return Member([*raw[:-1], hidden], "whiteout")
    if not (0 <= info.uid <= _MAX_ID and 0 <= info.gid <= _MAX_ID):
        raise SnapshotError(f"layer entry {info.name!r} has an invalid owner")
    kind = _KINDS.get(info.type)
    if kind is None:
        raise SnapshotError(f"layer entry {info.name!r} has an unsupported type")
    xattrs = {}
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            xattr = key.removeprefix("SCHILY.xattr.")
            if not xattr.startswith(_REFUSED_XATTRS):
                xattrs[xattr] = value.encode("utf-8", "surrogateescape")
    return Member(
        raw, kind, stat.S_IMODE(info.mode), (info.uid, info.gid), int(info.mtime * 1e9),
        info.linkname, os.makedev(info.devmajor, info.devminor) if kind in ("char", "block")
        else 0, xattrs,
    )  # fmt: skip


_KINDS = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}  # fmt: skip


def layer_members(layer: Path) -> Iterator[tuple[Member, Path | None]]:
    """The entries of an unpacked (overlay-format) layer directory, parents first, each
    with the path its content is read from (files only). The directory is kiln's own
    snapshot; its entries are read with ``lstat`` and never followed."""

    def walk(directory: Path, parts: list[str]) -> Iterator[tuple[Member, Path | None]]:
        if parts and any(_xattr(directory, name) == b"y" for name in OPAQUE_XATTRS):
            yield Member([*parts, "."], "opaque"), None
        with os.scandir(directory) as listing:
            children = sorted(listing, key=lambda e: e.name)
        for child in children:
            path = Path(child.path)
            st = child.stat(follow_symlinks=False)
            here = [*parts, child.name]
            xattrs = {k: v for k, v in _xattrs(path).items() if not k.startswith(_REFUSED_XATTRS)}
            common = (stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid), st.st_mtime_ns)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                yield Member(here, "whiteout"), None
            elif stat.S_ISDIR(st.st_mode):
                yield Member(here, "dir", *common, xattrs=xattrs), None
                yield from walk(path, here)
            elif stat.S_ISREG(st.st_mode):
                yield Member(here, "file", *common, xattrs=xattrs), path
            elif stat.S_ISLNK(st.st_mode):
                yield Member(here, "symlink", *common, link=os.readlink(path)), None
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
                yield Member(here, kind, *common, rdev=st.st_rdev, xattrs=xattrs), None
            elif stat.S_ISFIFO(st.st_mode):
                yield Member(here, "fifo", *common, xattrs=xattrs), None

    yield from walk(layer, [])


def _xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in names:
        value = _xattr(path, name)
        if value is not None:
            found[name] = value
    return found


def apply_layer_dir(layer: Path, dest: Tree) -> None:
    """Apply an unpacked layer onto a merged tree (the copy snapshotter's view): whiteouts
    delete, opaque directories empty what is below, everything else is copied."""
    applier = Applier(dest, MERGE)
    try:
        for member, source in layer_members(layer):
            if source is None:
                applier.apply(member)
                continue
            with tree.opened(os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)) as fd:
                applier.apply(member, lambda out, fd=fd: tree.copy_data(fd, out))  # type: ignore[misc]
        applier.finish()
    finally:
        applier.close()
