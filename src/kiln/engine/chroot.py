"""Chroot-style isolation, for machines without an OCI runtime (``--isolation chroot``).

Run as ``python -m kiln.engine.chroot SPEC.json``: the process enters new mount, PID, IPC and
UTS namespaces (and a network one for ``--network none``), forks so that the step is PID 1 of
its namespace, mounts /proc, a small /dev and the bundle's hosts and resolv.conf, chroots into
the root filesystem, drops to the step's user and executes the command. Everything it mounts
lives in its private mount namespace and disappears with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from kiln.tree import Tree, proc_path

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()),
        f"mount {target}",
    )


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if spec["network"] == "none":
        flags |= CLONE_NEWNET
    _check(_libc.unshare(flags), "unshare")
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) if status else 0
    try:
        _enter(spec)
    except OSError as err:
        print(f"kiln chroot: {err}", file=sys.stderr)
        os._exit(126)
    return 0  # not reached: _enter executes the command


def _enter(spec: dict[str, Any]) -> None:
    rootfs, bundle = str(spec["rootfs"]), str(spec["bundle"])
    root = Tree(rootfs)

    def inside(path: str) -> str:  # the image's own symlinks, followed inside the image
        fd = root.lookup(path)
        if fd is None:
            raise OSError(2, f"{path}: no such mount point in the image")
        return proc_path(fd)  # left open: the mount below goes to exactly this inode

    _mount("none", "/", "", MS_REC | MS_PRIVATE)
    _mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", inside("/dev"), "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for device in DEVICES:
        dev = root.directory("/dev")
        os.close(os.open(device, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644, dir_fd=dev))
        target = inside(f"/dev/{device}")
        _mount(f"/dev/{device}", target, "", MS_BIND)
    os.close(root.directory("/dev/shm", make=(0, 0)))
    shm_options = f"mode=1777,size={int(spec.get('shm_size', 64 << 20))}"
    _mount("shm", inside("/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV, shm_options)
    for name in ("hosts", "resolv.conf"):
        _mount(f"{bundle}/{name}", inside(f"/etc/{name}"), "", MS_BIND)
        _mount("none", inside(f"/etc/{name}"), "", MS_BIND | MS_RDONLY | 32)  # 32: MS_REMOUNT
    _check(
        _libc.sethostname(str(spec["hostname"]).encode(), len(str(spec["hostname"]))), "hostname"
    )
    os.chroot(rootfs)
    os.chdir(str(spec["cwd"]))
    user = spec["user"]
    os.setgroups(list(user["additional_gids"]))
    os.setgid(int(user["gid"]))
    os.setuid(int(user["uid"]))
    env = dict(item.split("=", 1) for item in spec["env"])
    args = list(spec["args"])
    os.execvpe(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
