"""Overlay mounts: a step's root filesystem is its parent layers plus a fresh upper dir."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from kiln.errors import KilnError

_libc = ctypes.CDLL(None, use_errno=True)  # the libc this process runs on
_MNT_DETACH = 2


class MountError(KilnError):
    """A mount that the kernel refused."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.errno = code


MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8


def mount(source: str, target: Path, fstype: str, options: str, flags: int = 0) -> None:
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, options.encode()):
        code = ctypes.get_errno()
        raise MountError(f"cannot mount {fstype} on {target}: {os.strerror(code)}", code)


def unmount(target: Path) -> None:
    if _libc.umount2(os.fsencode(target), _MNT_DETACH):
        code = ctypes.get_errno()
        raise MountError(f"cannot unmount {target}: {os.strerror(code)}", code)


# The kernel reads mount options from one page.
_OPTIONS_LIMIT = 4000 - len(",volatile")
# chdir is process-wide: mounts that need it (very deep images) take turns.
_cwd_lock = threading.Lock()
# Overlay's "volatile" option (Linux 5.10+) skips the sync of the whole upper filesystem
# that an unmount otherwise does: 20 ms or more per step, for data kiln reads back at once
# and stores in blobs of its own. None until a mount has shown whether the kernel has it.
_volatile: bool | None = None


@contextlib.contextmanager
def overlay(lowers: Sequence[Path], upper: Path, work: Path, target: Path) -> Iterator[Path]:
    """Mount ``lowers`` (bottom first) under ``upper`` at ``target`` for the block."""
    if not lowers:
        empty = work.parent / "empty"
        empty.mkdir(exist_ok=True)
        lowers = [empty]
    # overlayfs lists lower dirs top first, and refuses one listed twice (ELOOP): a layer
    # two steps made alike is mounted once, at its upper place, which hides the lower copy
    # path for path, whiteouts and opaque dirs as well.
    ordered = [*dict.fromkeys(reversed(lowers)), upper, work]
    options = _options([str(p.resolve()) for p in ordered])
    if len(options) <= _OPTIONS_LIMIT:
        _mount_overlay(target.resolve(), options)
    else:  # paths relative to their common parent are shorter: mount from there
        base = Path(os.path.commonpath(ordered))
        with _cwd_lock:
            previous = os.getcwd()
            os.chdir(base)
            try:
                relative = _options([os.path.relpath(p, base) for p in ordered])
                _mount_overlay(target.resolve(), relative)
            finally:
                os.chdir(previous)
    try:
        yield target
    finally:
        unmount(target)


def _mount_overlay(target: Path, options: str) -> None:
    global _volatile
    if _volatile is not False:
        try:
            mount("overlay", target, "overlay", options + ",volatile")
            _volatile = True
            return
        except MountError as err:
            if _volatile or err.errno != errno.EINVAL:
                raise
            _volatile = False  # an older kernel: mount without it from now on
    mount("overlay", target, "overlay", options)


def _options(paths: list[str]) -> str:
    *lowers, upper, work = paths
    return f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
