"""Scratch space of one kiln process under ``$KILN_ROOT/work``, and reclaiming what a
killed process left there.

A build (or ``kiln run``, or the unpacking of a layer) works in a directory of its own:
overlay upper and work dirs, merged mounts, stage mounts, copies of the context. Beside it
lies a lock file, held with ``flock`` for as long as the process lives. A process killed
with SIGKILL cannot clean up after itself; the next kiln command finds its lock free and
reclaims what it left: stops its runc containers and the processes it started, unmounts
what is mounted below it, and removes it.

Secrets and runc bundles (whose ``config.json`` carries ``env=`` secrets) go into a
private tmpfs mounted inside the workspace (mode 0700), so none of them reaches a disk;
where no tmpfs can be mounted, a 0700 directory that the workspace's end removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kiln.engine.overlay import MS_NODEV, MS_NOEXEC, MS_NOSUID, MountError, mount, unmount

RUNC = "runc"
_LOCK = ".lock"
PROCESS = "process"  # in a bundle: "PID START" of a process group to kill with it


def record_process(bundle: Path, pid: int) -> None:
    """Remember that the step of ``bundle`` runs as process group ``pid`` (the chroot
    isolation), so that a reclaim can kill it if kiln dies first."""
    (bundle / PROCESS).write_text(f"{pid} {_start_time(pid)}")


class Workspace:
    """A directory of this process's work; ``close`` (or the context manager) removes it
    and everything it started."""

    def __init__(self, path: Path, lock: int) -> None:
        self.path = path
        self._lock = lock
        self._private: Path | None = None
        self._making = threading.Lock()  # parallel stages ask at once

    def private(self) -> Path:
        """A 0700 tmpfs inside the workspace, for what must never reach a disk."""
        with self._making:
            if self._private is None:
                private = self.path / "private"
                private.mkdir(mode=0o700)
                with contextlib.suppress(MountError):  # no privilege to mount: a 0700 dir
                    mount("tmpfs", private, "tmpfs", "mode=0700,size=64m",
                          MS_NOSUID | MS_NODEV | MS_NOEXEC)  # fmt: skip
                self._private = private
            return self._private

    def close(self) -> None:
        _clean(self.path)
        with contextlib.suppress(OSError):
            os.unlink(_lock_path(self.path))
        os.close(self._lock)


@contextlib.contextmanager
def workspace(root: Path, kind: str) -> Iterator[Workspace]:
    """A new workspace (``work/KIND-XXXX``) of the store at ``root``, for the block."""
    work = root / "work"
    work.mkdir(mode=0o700, exist_ok=True)
    # The lock comes first: a directory without one is never taken for a live one's.
    fd, lock_name = tempfile.mkstemp(prefix=f"{kind}-", suffix=_LOCK, dir=work)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    path = Path(lock_name.removesuffix(_LOCK))
    try:
        path.mkdir(mode=0o700)
    except BaseException:
        os.unlink(lock_name)
        os.close(fd)
        raise
    space = Workspace(path, fd)
    try:
        yield space
    finally:
        space.close()


def reclaim(root: Path, *, strays: bool = False) -> list[str]:
    """Clean up the workspaces of kiln processes that died without doing it themselves;
    the names of those reclaimed. With ``strays`` (``kiln prune``), also what has no lock
    and is more than an hour old: the scratch dirs of kiln versions that took none."""
    work = root / "work"
    try:
        names = os.listdir(work)
    except FileNotFoundError:
        return []
    locks = [name for name in names if name.endswith(_LOCK)]
    reclaimed = _strays(root, names) if strays else []
    for name in locks:
        lock = work / name
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # its owner finished meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its owner is alive
            if not lock.exists():
                continue  # removed by its owner just before we locked it
            _clean(lock.with_name(name.removesuffix(_LOCK)))
            os.unlink(lock)
            reclaimed.append(name.removesuffix(_LOCK))
        finally:
            os.close(fd)
    return reclaimed


def _strays(root: Path, names: list[str]) -> list[str]:
    old = time.time() - 3600
    found = [
        root / "work" / name
        for name in names
        if not name.endswith(_LOCK) and name + _LOCK not in names
    ]
    snapshots = root / "snapshots"
    if snapshots.is_dir():  # scratch dirs earlier versions kept beside the snapshots
        found += [p for p in snapshots.iterdir() if p.name.startswith(_OLD_SCRATCH)]
    reclaimed = []
    for path in found:
        with contextlib.suppress(OSError):
            if path.lstat().st_mtime < old:
                _clean(path)
                reclaimed.append(path.name)
    return reclaimed


_OLD_SCRATCH = ("upper-", "ovl-", "staging-", "probe-")


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + _LOCK)


def _clean(path: Path) -> None:
    """Stop, unmount and remove what a workspace holds: containers first (they use the
    mounts), then recorded process groups, then the mounts, deepest first."""
    for state in sorted(path.glob("private/bundle-*/state")):
        listed = subprocess.run([RUNC, "--root", str(state), "list", "-q"],
                                capture_output=True, text=True)  # fmt: skip
        for container in listed.stdout.split():
            subprocess.run([RUNC, "--root", str(state), "delete", "--force", container],
                           capture_output=True)  # fmt: skip
    for record in path.glob("private/bundle-*/" + PROCESS):
        with contextlib.suppress(OSError):
            pid, _, started = record.read_text().partition(" ")
            if pid.isdecimal() and _start_time(int(pid)) == started:  # not a reused PID
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)
    for mounted in sorted(_mounts_below(path), key=lambda p: p.count("/"), reverse=True):
        with contextlib.suppress(MountError):
            unmount(Path(mounted))
    shutil.rmtree(path, ignore_errors=True)


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace."""
    prefix = str(path)
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space) undone."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot), to tell it from a later one
    that reused its PID; "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]
