"""Overlay mounts: a step's root filesystem is its parent layers plus a fresh upper dir."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from kiln.errors import KilnError

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_MNT_DETACH = 2


class MountError(KilnError):
    """A mount that the kernel refused."""


def _mount(source: str, target: Path, fstype: str, options: str) -> None:
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), 0, options.encode()):
        errno = ctypes.get_errno()
        raise MountError(f"cannot mount {fstype} on {target}: {os.strerror(errno)}")


def _umount(target: Path) -> None:
    if _libc.umount2(os.fsencode(target), _MNT_DETACH):
        errno = ctypes.get_errno()
        raise MountError(f"cannot unmount {target}: {os.strerror(errno)}")


@contextlib.contextmanager
def overlay(lowers: Sequence[Path], upper: Path, work: Path, target: Path) -> Iterator[Path]:
    """Mount ``lowers`` (bottom first) under ``upper`` at ``target`` for the block."""
    if not lowers:
        empty = work.parent / "empty"
        empty.mkdir(exist_ok=True)
        lowers = [empty]
    # overlayfs lists lower dirs top first; paths are made relative to keep the option
    # string short (the kernel takes one page), so mount from their common parent.
    base = Path(os.path.commonpath([*lowers, upper, work]))
    relative = [os.path.relpath(p, base) for p in (*reversed(lowers), upper, work)]
    *lower_names, upper_name, work_name = relative
    options = f"lowerdir={':'.join(lower_names)},upperdir={upper_name},workdir={work_name}"
    previous = os.getcwd()
    os.chdir(base)
    try:
        _mount("overlay", target.resolve(), "overlay", options)
    finally:
        os.chdir(previous)
    try:
        yield target
    finally:
        _umount(target)
