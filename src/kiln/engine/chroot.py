"""kiln's own sandbox, for where runc cannot run (``--isolation chroot``: only on request).

Run as ``python -m kiln.engine.chroot SPEC.json``. The process joins the build's network
namespace (or makes an empty one, or keeps the host's), enters new mount, PID, IPC and UTS
namespaces and forks, so that the step is PID 1 of its namespace and dies with it. The
child makes the root filesystem a mount of its own, without device nodes (no cgroup
guards devices here: a node a step makes cannot be opened), mounts /proc with Docker's
masked and read-only paths, a small /dev, /dev/shm and the bundle's hosts and resolv.conf,
and then ``pivot_root``s into it and detaches the old root (or, where pivot_root is refused,
moves it over ``/``), so that no path leads back to the host (``chroot`` alone can be
escaped by a process with CAP_SYS_CHROOT). It keeps
Docker's default capabilities, loads the seccomp filter runc's steps get, drops to the
step's user and executes the command. Everything it mounts lives in its own mount
namespace and goes with it.

What it lacks against runc: cgroups (no limits, no OOM report) and ``RUN --mount``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from kiln.engine import seccomp
from kiln.engine.runtime import CAPABILITIES, CAPABILITY_NAMES
from kiln.tree import Tree, proc_path

_libc = ctypes.CDLL(None, use_errno=True)  # the libc this process runs on
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP = 1, 24
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
KEPT_CAPABILITIES = {CAPABILITY_NAMES.index(name.removeprefix("CAP_")) for name in CAPABILITIES}
MASKED = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware")  # fmt: skip
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


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
    elif spec["network"] == "default":
        network = os.open(spec["netns"], os.O_RDONLY | os.O_CLOEXEC)
        _check(_libc.setns(network, CLONE_NEWNET), "join the build's network")
        os.close(network)
    _check(_libc.unshare(flags), "unshare")
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) if status else 0
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        _enter(spec)
    except OSError as err:
        print(f"kiln chroot: {err}", file=sys.stderr)
        os._exit(126)
    return 0  # not reached: _enter executes the command


def _enter(spec: dict[str, Any]) -> None:
    rootfs, bundle = str(spec["rootfs"]), str(spec["bundle"])
    privileged = bool(spec.get("privileged"))
    _mount("none", "/", "", MS_REC | MS_PRIVATE)
    _mount(rootfs, rootfs, "", MS_BIND | MS_REC)  # a mount of its own, to pivot into
    _mount("none", rootfs, "", MS_REMOUNT | MS_BIND | (0 if privileged else MS_NODEV))
    root = Tree(rootfs)  # opened on the new mount: every lookup below goes through it
    syscalls = None if privileged else seccomp.Filter()  # libseccomp: read before pivot_root

    def inside(path: str) -> str:  # the image's own symlinks, followed inside the image
        fd = root.lookup(path)
        if fd is None:
            raise OSError(2, f"{path}: no such mount point in the image")
        return proc_path(fd)  # left open: the mount goes to exactly this inode

    _mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", inside("/dev"), "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    dev = root.directory("/dev")
    for device in DEVICES:
        os.close(os.open(device, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644, dir_fd=dev))
        _mount(f"/dev/{device}", inside(f"/dev/{device}"), "", MS_BIND)
    os.close(root.directory("/dev/shm", make=(0, 0)))
    shm_options = f"mode=1777,size={int(spec.get('shm_size', 64 << 20))}"
    _mount("shm", inside("/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV, shm_options)
    if not privileged:
        _mask(root)
        for path in READ_ONLY:
            _read_only(root, path)
    for name in ("hosts", "resolv.conf"):
        _mount(f"{bundle}/{name}", inside(f"/etc/{name}"), "", MS_BIND)
        _mount("none", inside(f"/etc/{name}"), "", MS_BIND | MS_RDONLY | MS_REMOUNT)
    hostname = str(spec["hostname"]).encode()
    _check(_libc.sethostname(hostname, len(hostname)), "hostname")
    _pivot(rootfs)
    if not privileged:
        for capability in range(_last_capability() + 1):
            if capability not in KEPT_CAPABILITIES:
                _check(_libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0), "drop capabilities")
    if syscalls is not None:
        syscalls.load()
    os.chdir(str(spec["cwd"]))
    user = spec["user"]
    os.setgroups(list(user["additional_gids"]))
    os.setgid(int(user["gid"]))
    os.setuid(int(user["uid"]))
    env = dict(item.split("=", 1) for item in spec["env"])
    args = list(spec["args"])
    os.execvpe(args[0], args, env)


def _mask(root: Tree) -> None:
    """Docker's masked paths: /dev/null over files, an empty read-only tmpfs over
    directories (those this kernel has)."""
    for path in MASKED:
        fd = root.lookup(path)
        if fd is None:
            continue
        target = proc_path(fd)
        if Path(target).is_dir():
            _mount("tmpfs", target, "tmpfs", MS_RDONLY, "size=0")
        else:
            _mount("/dev/null", target, "", MS_BIND)
        os.close(fd)


def _read_only(root: Tree, path: str) -> None:
    fd = root.lookup(path)
    if fd is None:
        return
    target = proc_path(fd)
    _mount(target, target, "", MS_BIND | MS_REC)
    os.close(fd)
    fd = root.lookup(path)  # now the bind mount itself
    if fd is not None:
        _mount("none", proc_path(fd), "", MS_BIND | MS_REMOUNT | MS_RDONLY)


def _pivot(rootfs: str) -> None:
    """Make ``rootfs`` the root, and detach the old one: nothing leads back to it. Where
    pivot_root is refused (Docker's own seccomp profile refuses it inside its containers),
    the root filesystem is moved over ``/`` and chrooted into, as ``runc --no-pivot`` does:
    the old root then lies under it, out of reach of a process that can neither unmount
    (no CAP_SYS_ADMIN, and seccomp) nor open by handle (no CAP_DAC_READ_SEARCH)."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    os.chdir(rootfs)
    if number is not None and _libc.syscall(number, b".", b".") == 0:
        _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    else:
        _mount(".", "/", "", MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def _last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
