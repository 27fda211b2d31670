"""A step's root filesystem: an overlay mount where the kernel allows it, a copy elsewhere.

Both give the same contract: inside the block, ``target`` is the layers merged; afterwards
``upper`` holds what the block changed, in overlayfs's format (new and changed files, 0/0
character devices for deletions, the opaque xattr on replaced directories). The copy-based
fallback materialises the layers into ``target``, remembers every path's stat, and after the
block writes the difference into ``upper``. It is chosen once per process when overlayfs
cannot be mounted (or when ``KILN_SNAPSHOTTER=copy``), and says so once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kiln.engine.overlay import MountError, overlay
from kiln.engine.snapshots import OVERLAY, Applier, Member, apply_layer_dir
from kiln.tree import Tree, copy_data, opened, proc_path

_choice: str | None = None
_choice_lock = threading.Lock()

Notice = Callable[[str], None]


def snapshotter(scratch: Path, notice: Notice = lambda message: None) -> str:
    """``overlay`` or ``copy``: what this process uses (decided once)."""
    global _choice
    with _choice_lock:
        if _choice is None:
            _choice = os.environ.get("KILN_SNAPSHOTTER") or _probe(scratch)
            if _choice == "copy":
                notice("overlayfs cannot be mounted here: using the copy-based snapshotter")
        return _choice


def _probe(scratch: Path) -> str:
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=scratch))
    try:
        dirs = [probe / name for name in ("lower", "upper", "work", "merged")]
        for path in dirs:
            path.mkdir()
        with overlay([dirs[0]], dirs[1], dirs[2], dirs[3]):
            return "overlay"
    except MountError:
        return "copy"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@contextlib.contextmanager
def mounted(
    lowers: Sequence[Path], upper: Path, work: Path, target: Path, *, kind: str = "overlay"
) -> Iterator[Path]:
    """``target`` as the merge of ``lowers``; what the block changes lands in ``upper``."""
    if kind == "overlay":
        with overlay(lowers, upper, work, target):
            yield target
        return
    _materialise(lowers, target)
    before = _index(target)
    try:
        yield target
        _diff(target, before, upper)
    finally:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(exist_ok=True)


def _materialise(lowers: Sequence[Path], target: Path) -> None:
    """Apply the layers bottom first: opaque dirs empty what is below, whiteouts delete.
    Through ``kiln.tree``: a layer's symlink never leads a later layer's entry out."""
    with Tree(target) as merged:
        for layer in lowers:
            apply_layer_dir(layer, merged)


Stat = tuple[int, int, int, int, int, int, str]


def _index(root: Path) -> dict[str, Stat]:
    """Every path's type, mode, owner, size, mtime and ctime (and link target). The walk
    never follows a symlink."""
    index: dict[str, Stat] = {}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
            index[os.path.relpath(path, root)] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, link
            )  # fmt: skip
    return index


def _diff(root: Path, before: dict[str, Stat], upper: Path) -> None:
    """What changed under ``root`` since ``before``, written into ``upper`` as overlay does:
    changed entries with the directories above them (copied up with their metadata), 0/0
    character devices for deletions, the opaque xattr where a directory replaced something
    else."""
    after = _index(root)
    with Tree(root) as merged, Tree(upper) as out:
        applier = Applier(out, OVERLAY)
        made: set[str] = set()

        def copy_up(relative: str) -> None:
            parts = relative.split("/")
            for depth in range(1, len(parts)):
                above = "/".join(parts[:depth])
                if above not in made:
                    made.add(above)
                    applier.apply(_member(above, after[above], "dir", merged))

        try:
            for relative in sorted(after):  # parents before their children
                old, new = before.get(relative), after[relative]
                if old == new:
                    continue
                copy_up(relative)
                made.add(relative)
                if stat.S_ISDIR(new[0]):
                    applier.apply(_member(relative, new, "dir", merged))
                    if old is not None and not stat.S_ISDIR(old[0]):  # a file became a dir
                        applier.apply(Member([*relative.split("/"), "."], "opaque"))
                elif stat.S_ISREG(new[0]):
                    fd = merged.lookup(relative, follow=False)
                    if fd is None:
                        continue
                    with opened(fd), open(proc_path(fd), "rb") as source:
                        applier.apply(
                            _member(relative, new, "file", merged),
                            lambda out_fd: copy_data(source.fileno(), out_fd),
                        )
                elif not stat.S_ISSOCK(new[0]):  # a socket cannot be part of a layer
                    applier.apply(_member(relative, new, _kind(new[0]), merged))
            for relative in sorted(set(before) - set(after)):
                parent = relative.rpartition("/")[0]
                if parent and (parent not in after or not stat.S_ISDIR(after[parent][0])):
                    continue  # the whole parent went, or is no directory now: that covers it
                copy_up(relative)
                applier.apply(Member(relative.split("/"), "whiteout"))
            applier.finish()
        finally:
            applier.close()


def _member(relative: str, st: Stat, kind: str, merged: Tree | None = None) -> Member:
    mode, uid, gid, _, mtime, _, link = st
    xattrs: dict[str, bytes] = {}
    if merged is not None and kind != "symlink":
        fd = merged.lookup(relative, follow=False)
        if fd is not None:
            with opened(fd):
                xattrs = _xattrs(proc_path(fd))
    rdev = 0
    if kind in ("char", "block") and merged is not None:
        fd = merged.lookup(relative, follow=False)
        if fd is not None:
            with opened(fd):
                rdev = os.fstat(fd).st_rdev
    return Member(
        relative.split("/"), kind, stat.S_IMODE(mode), (uid, gid), mtime, link, rdev, xattrs
    )


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    return "fifo"


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path)
    except OSError:
        return {}
    found = {}
    for name in names:
        if name.startswith(("trusted.", "user.overlay.")):
            continue
        with contextlib.suppress(OSError):
            found[name] = os.getxattr(path, name)
    return found
