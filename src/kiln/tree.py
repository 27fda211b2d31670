"""Untrusted directory trees, reached only through file descriptors.

An image's root filesystem, a layer being unpacked, a stage mounted for ``COPY --from``, a
build context, a git checkout: each is a directory on the host whose symlinks belong to the
tree. ``/app -> /etc`` in an image means the image's /etc, and a context's ``link -> /``
means the context's root. Joining such paths on the host would follow them out of the
tree, so every path below a ``Tree`` is resolved inside it, as ``chroot`` would resolve it:
absolute links start again at the tree's root, and ``..`` never climbs above it.

Lookups use ``openat2(RESOLVE_IN_ROOT)`` where the kernel has it (Linux 5.6+), and
otherwise a walk that opens one component at a time with ``O_NOFOLLOW`` relative to the
directory before it, following symlinks itself. Either way the result is a file
descriptor: what is done next (create, remove, chown, chmod, utime, setxattr) is done
through it or relative to it, never by a host path that could be swapped for a symlink
between a check and a use. Paths are cleaned lexically first (``a/b/../c`` is ``a/c``), as
BuildKit cleans them; a ``..`` inside a symlink's target is taken physically.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError

_MAX_LINKS = 40  # as Linux's ELOOP limit
_SYS_OPENAT2 = 437  # the same number on every architecture (a syscall added after 5.1)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE_IN_ROOT = 0x10
_PATH = os.O_PATH | os.O_CLOEXEC
_DIRECTORY = _PATH | os.O_DIRECTORY | os.O_NOFOLLOW


class TreeError(KilnError):
    """A path of an untrusted tree that cannot be resolved or written safely."""


Owner = tuple[int, int]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)  # the libc this process runs on
_libc.syscall.restype = ctypes.c_long
# None until the first call shows whether this kernel (and any seccomp filter we run
# under) lets us use openat2.
_have_openat2: bool | None = None


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int | None:
    """``openat2``, or None where the kernel lacks it (the caller walks instead)."""
    global _have_openat2
    if _have_openat2 is False:
        return None
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    for _ in range(8):  # EAGAIN: a rename raced with the lookup; the kernel asks to retry
        fd = _libc.syscall(
            _SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd >= 0:
            _have_openat2 = True
            return int(fd)
        code = ctypes.get_errno()
        if code == errno.EAGAIN:
            continue
        if code in (errno.ENOSYS, errno.EPERM) and not _have_openat2:
            _have_openat2 = False  # an old kernel, or a seccomp profile that predates it
            return None
        raise OSError(code, os.strerror(code), path)
    return None


def clean(path: str) -> list[str]:
    """The components of ``path`` cleaned lexically, relative to the root: ``/a/./b/../c``
    is ``[a, c]``, and ``..`` above the root stays at the root."""
    normal = posixpath.normpath("/" + path)
    return [part for part in normal.split("/") if part]


@dataclass(frozen=True)
class Entry:
    """Where a path of a tree ends: the directory holding it (an ``O_PATH`` descriptor the
    caller closes) and its name there; ``name`` is "" for the tree's root itself."""

    parent: int
    name: str
    path: str  # the resolved path, relative to the tree's root, symlinks taken out

    def lstat(self) -> os.stat_result | None:
        """The entry's own status (a symlink's, not its target's); None if it is missing."""
        try:
            if not self.name:
                return os.stat(self.parent)
            return os.stat(self.name, dir_fd=self.parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def close(self) -> None:
        os.close(self.parent)


class Tree:
    """A directory whose contents are untrusted. Close it (or use it as a context manager)
    when done: it holds a descriptor of its root."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        try:
            self.fd = os.open(self.root, _DIRECTORY)
        except OSError as err:
            raise TreeError(f"cannot open {root}: {err.strerror}") from None
        self._real = os.readlink(proc_path(self.fd))

    @classmethod
    def at(cls, fd: int) -> Tree:
        """The tree rooted at the open directory ``fd`` (duplicated: close both)."""
        tree = cls.__new__(cls)
        tree.fd = os.dup(fd)
        tree._real = os.readlink(proc_path(tree.fd))
        tree.root = Path(tree._real)
        return tree

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups

    def lookup(self, path: str, *, follow: bool = True) -> int | None:
        """An ``O_PATH`` descriptor of ``path``, its last component followed when it is a
        symlink and ``follow``; None if anything on the way is missing or not a directory.
        Raises ``TreeError`` for a symlink loop."""
        parts = clean(path)
        flags = _PATH | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = _openat2(
                self.fd, "/".join(parts) or ".", flags, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS
            )
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise TreeError(f"too many levels of symbolic links in {path}") from None
            raise
        if fd is not None:
            return fd
        return self._lookup_by_walk(parts, follow)

    def _lookup_by_walk(self, parts: list[str], follow: bool) -> int | None:
        try:
            entry = self._walk(parts, follow=follow, make=None)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with opened(entry.parent):
            try:
                return os.open(entry.name or ".", _PATH | os.O_NOFOLLOW, dir_fd=entry.parent)
            except (FileNotFoundError, NotADirectoryError):
                return None

    def entry(self, path: str, *, follow: bool = False, make: Owner | None = None,
              links: bool = True) -> Entry:  # fmt: skip
        """Where ``path`` ends: its parent directory, resolved inside the tree, and its last
        component, followed (and resolved further) only with ``follow``.

        ``make``: missing directories on the way are created, owned by it (mode 0755).
        ``links``: symlinks on the way are followed inside the tree; without it, a symlink
        where a directory should be is an error (a layer never writes through one).
        Raises ``FileNotFoundError`` or ``NotADirectoryError`` when the way is missing or
        blocked (and ``make`` is not given), ``TreeError`` for a loop."""
        return self._walk(clean(path), follow=follow, make=make, links=links)

    def canonical(self, path: str, *, follow: bool = False) -> str | None:
        """``path`` with its symlinks resolved inside the tree (the last one only with
        ``follow``), relative to the root ("" for the root); None when nothing is there."""
        try:
            entry = self._walk(clean(path), follow=follow, make=None)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with opened(entry.parent):
            return entry.path if entry.lstat() is not None else None

    def relative(self, fd: int) -> str | None:
        """Where the open ``fd`` is, relative to the root ("" for the root itself); None if
        it is not inside the tree (or no longer linked into it)."""
        where = os.readlink(proc_path(fd))
        if where == self._real:
            return ""
        if where.startswith(self._real.rstrip("/") + "/"):
            return where[len(self._real.rstrip("/")) + 1 :]
        return None

    def host_path(self, relative: str) -> Path:
        """The host path of a resolved (canonical) path, for tools that take paths."""
        return self.root.joinpath(*relative.split("/")) if relative else self.root

    def read(self, path: str, limit: int = 4 << 20, *, links: bool = True) -> bytes | None:
        """The content of the regular file at ``path`` (symlinks followed inside the tree,
        unless not ``links``), None if there is no regular file there. A FIFO or a device is
        never opened, so an image cannot hang or drive kiln with one; more than ``limit``
        bytes is an error."""
        if links:
            fd = self.lookup(path)
        else:
            try:
                entry = self.entry(path, links=False)
            except (FileNotFoundError, NotADirectoryError, TreeError):
                return None
            with opened(entry.parent):
                try:
                    fd = os.open(entry.name or ".", _PATH | os.O_NOFOLLOW, dir_fd=entry.parent)
                except (FileNotFoundError, NotADirectoryError):
                    return None
        if fd is None:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            with open(f"/proc/self/fd/{fd}", "rb") as file:
                data = file.read(limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise TreeError(f"{path} is larger than {limit >> 20} MiB")
        return data

    def exists(self, path: str) -> bool:
        fd = self.lookup(path, follow=False)
        if fd is not None:
            os.close(fd)
        return fd is not None

    def is_dir(self, path: str) -> bool:
        fd = self.lookup(path)
        if fd is None:
            return False
        try:
            return stat.S_ISDIR(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def directory(self, path: str, *, make: Owner | None = None, links: bool = True) -> int:
        """An ``O_PATH`` descriptor of the directory at ``path`` (made where missing, with
        ``make``), symlinks followed inside the tree."""
        entry = self._walk(clean(path), follow=True, make=make, links=links)
        try:
            if not entry.name:
                return os.open(".", _DIRECTORY, dir_fd=entry.parent)
            if make is not None and entry.lstat() is None:
                _mkdir(entry.parent, entry.name, make)
            return os.open(entry.name, _DIRECTORY, dir_fd=entry.parent)
        finally:
            entry.close()

    # -- the walk

    def _walk(
        self, parts: list[str], *, follow: bool, make: Owner | None, links: bool = True
    ) -> Entry:
        """Resolve ``parts`` one component at a time. ``stack`` holds a descriptor of every
        directory from the root down to where the walk is, so that ``..`` in a symlink's
        target goes back up exactly the way it came, and never above the root."""
        stack = [os.dup(self.fd)]
        names: list[str] = []
        pending = parts[::-1]
        seen_links = 0
        try:
            while pending:
                part = pending.pop()
                if part in ("", "."):
                    continue
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        names.pop()
                    continue
                last = not any(p not in ("", ".") for p in pending)
                try:
                    st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if last:
                        return Entry(stack.pop(), part, "/".join([*names, part]))
                    if make is None:
                        raise
                    _mkdir(stack[-1], part, make)
                    st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) and (follow or not last):
                    if not links:
                        where = "/".join([*names, part])
                        raise TreeError(f"{where} is a symbolic link, not a directory")
                    seen_links += 1
                    if seen_links > _MAX_LINKS:
                        raise TreeError(f"too many levels of symbolic links in /{'/'.join(parts)}")
                    target = os.readlink(part, dir_fd=stack[-1])
                    if target.startswith("/"):
                        for fd in stack[1:]:
                            os.close(fd)
                        del stack[1:]
                        names.clear()
                    pending.extend(reversed(target.split("/")))
                    continue
                if last:
                    return Entry(stack.pop(), part, "/".join([*names, part]))
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", part)
                stack.append(os.open(part, _DIRECTORY, dir_fd=stack[-1]))
                names.append(part)
            return Entry(stack.pop(), "", "/".join(names))
        finally:
            for fd in stack:
                os.close(fd)


def _mkdir(dirfd: int, name: str, owner: Owner) -> None:
    try:
        os.mkdir(name, 0o755, dir_fd=dirfd)
    except FileExistsError:
        return  # made meanwhile (a parallel stage): what is there is checked by the caller
    except OSError as err:
        raise TreeError(f"cannot create directory {name}: {err.strerror}") from None
    os.chown(name, *owner, dir_fd=dirfd, follow_symlinks=False)


# -- acting on an entry, by its directory's descriptor and its name ---------------------------


def remove(dirfd: int, name: str) -> None:
    """Remove ``name`` whatever it is (a directory with its contents), never following a
    symlink; nothing if it is missing."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            shutil.rmtree(name, dir_fd=fd)  # fd-based: safe against symlinks inside
        finally:
            os.close(fd)
    else:
        os.unlink(name, dir_fd=dirfd)


def clear(dirfd: int) -> None:
    """Remove everything inside the directory ``dirfd`` (not the directory itself)."""
    for name in listdir(dirfd):
        remove(dirfd, name)


def listdir(dirfd: int) -> list[str]:
    """The names in the directory ``dirfd`` (an ``O_PATH`` descriptor is fine)."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def proc_path(fd: int, name: str = "") -> str:
    """A path naming exactly what ``fd`` is (and ``name`` inside it), for calls and tools
    that take paths: the kernel resolves ``/proc/self/fd/N`` to that very inode."""
    return f"/proc/self/fd/{fd}" + (f"/{name}" if name else "")


def set_metadata(
    dirfd: int,
    name: str,
    *,
    owner: Owner | None = None,
    mode: int | None = None,
    mtime_ns: int | None = None,
    xattrs: dict[str, bytes] | None = None,
) -> None:
    """Owner, mode, xattrs and mtime of ``name`` in ``dirfd``, in that order (chown clears
    setuid bits; the mtime last, after anything that would change it). A symlink's own
    metadata is set, never its target's; a symlink has no mode."""
    if owner is not None:
        os.chown(name, *owner, dir_fd=dirfd, follow_symlinks=False)
    if mode is not None or xattrs:
        fd = os.open(name, _PATH | os.O_NOFOLLOW, dir_fd=dirfd)
        try:
            is_link = stat.S_ISLNK(os.fstat(fd).st_mode)
            if mode is not None and not is_link:
                os.chmod(proc_path(fd), mode)
            for key, value in (xattrs or {}).items():
                with contextlib.suppress(OSError):  # a filesystem or kernel without them
                    if is_link:
                        os.setxattr(proc_path(dirfd, name), key, value, follow_symlinks=False)
                    else:
                        os.setxattr(proc_path(fd), key, value)
        finally:
            os.close(fd)
    if mtime_ns is not None:
        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dirfd, follow_symlinks=False)


def create_file(dirfd: int, name: str) -> int:
    """A new regular file ``name`` in ``dirfd``, open for writing (never through a symlink:
    whatever was there is removed first)."""
    remove(dirfd, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(name, flags, 0o600, dir_fd=dirfd)


def copy_data(source: int, target: int) -> None:
    """The content of file ``source`` into file ``target``, in the kernel where it can
    (``copy_file_range``: a reflink on filesystems that share extents)."""
    size = os.fstat(source).st_size
    offset = 0
    try:
        while offset < size:
            copied = os.copy_file_range(source, target, size - offset, offset, offset)
            if copied == 0:
                break
            offset += copied
        return
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    os.lseek(source, offset, os.SEEK_SET)
    os.lseek(target, offset, os.SEEK_SET)
    while block := os.read(source, 1 << 20):
        os.write(target, block)


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """``fd``, closed after the block."""
    try:
        yield fd
    finally:
        os.close(fd)
