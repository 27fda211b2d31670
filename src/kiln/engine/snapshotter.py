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
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kiln.engine.overlay import MountError, overlay
from kiln.errors import KilnError
from kiln.oci.layer import is_opaque, is_whiteout

_OPAQUE = "trusted.overlay.opaque"
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
    """Apply the layers bottom first: opaque dirs empty what is below, whiteouts delete."""
    for layer in lowers:
        for directory, dirs, files in os.walk(layer):
            for name in (*dirs, *files):
                path = Path(directory) / name
                below = target / path.relative_to(layer)
                if is_opaque(path) or is_whiteout(path):
                    _remove(below)
        _cp(layer, target)
    for directory, dirs, files in os.walk(target):
        for name in files:  # copied whiteouts: their paths are gone already
            path = Path(directory) / name
            if is_whiteout(path):
                path.unlink()
        for name in dirs:  # the merged view is plain: no overlay markers left in it
            with contextlib.suppress(OSError):
                os.removexattr(Path(directory) / name, _OPAQUE, follow_symlinks=False)


def _cp(source: Path, target: Path) -> None:
    result = subprocess.run(
        ["cp", "-a", "--no-target-directory", f"{source}/.", str(target)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise KilnError(f"cannot copy layer {source.name}: {result.stderr.strip()}")


Stat = tuple[int, int, int, int, int, int, str]


def _index(root: Path) -> dict[str, Stat]:
    """Every path's type, mode, owner, size, mtime and ctime (and link target)."""
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
    """What changed under ``root`` since ``before``, written into ``upper`` as overlay does."""
    after = _index(root)
    for relative in sorted(after):
        old, new = before.get(relative), after[relative]
        if old == new:
            continue
        source, target = root / relative, upper / relative
        _copy_parents(root, upper, relative)
        if stat.S_ISDIR(new[0]):
            if not target.exists():
                target.mkdir()
            shutil.copystat(source, target, follow_symlinks=False)
            os.chown(target, new[1], new[2])
            if old is not None and not stat.S_ISDIR(old[0]):
                os.setxattr(target, _OPAQUE, b"y")  # a file became a directory
        else:
            if target.exists() or target.is_symlink():
                target.unlink()
            subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    for relative in sorted(set(before) - set(after)):
        parent = relative.rpartition("/")[0]
        if parent and parent not in after:
            continue  # the whole parent went: its own whiteout covers this
        _copy_parents(root, upper, relative)
        target = upper / relative
        if not os.path.lexists(target):
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))


def _copy_parents(root: Path, upper: Path, relative: str) -> None:
    """Parent directories of ``relative`` in ``upper``, with the merged view's metadata."""
    parts = relative.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        partial = "/".join(parts[:depth])
        target = upper / partial
        if not target.exists():
            target.mkdir()
            source = root / partial
            if source.is_dir():
                shutil.copystat(source, target, follow_symlinks=False)
                st = os.lstat(source)
                os.chown(target, st.st_uid, st.st_gid)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
