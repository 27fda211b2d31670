"""The system calls RUN steps may not make, as Docker's default seccomp profile refuses them:
one table, given to runc as ``linux.seccomp`` and loaded by the chroot isolation itself
through libseccomp.

Docker's profile is an allowlist of about 350 calls; this is the other side of it, the
calls it leaves out that matter on a kernel of today: new namespaces (a user namespace is
where an unprivileged process gets capabilities to attack the kernel with), mounts,
keyrings (not namespaced), kernel modules, kexec, BPF, perf, ptrace's memory-access
cousins, clock and swap changes, io_uring. ``clone`` is refused only with a namespace
flag, as Docker refuses it, and ``clone3`` says it does not exist, so that the C library
falls back to ``clone``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import Any

DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "get_mempolicy", "init_module", "io_uring_enter", "io_uring_register",
    "io_uring_setup", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl",
    "lookup_dcookie", "mbind", "mount", "mount_setattr", "move_mount", "move_pages",
    "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open",
    "pivot_root", "process_vm_readv", "process_vm_writev", "query_module", "quotactl",
    "quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "syslog", "sysfs", "_sysctl", "umount", "umount2",
    "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
)  # fmt: skip
NAMESPACE_FLAGS = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
UNKNOWN = ("clone3",)  # ENOSYS: glibc then uses clone, whose flags a filter can see
# Every architecture a binary of this machine's may be built for (a 32-bit one too).
_ARCHES = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
}


class SeccompError(OSError):
    """A filter that could not be loaded."""


def runc_profile() -> dict[str, Any]:
    """The table as the OCI runtime spec's ``linux.seccomp``."""
    rules: list[dict[str, Any]] = [
        {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": list(UNKNOWN), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    for flag in NAMESPACE_FLAGS:
        rules.append({
            "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        })  # fmt: skip
    profile: dict[str, Any] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}
    arches = _ARCHES.get(os.uname().machine)
    if arches:
        profile["architectures"] = list(arches)
    return profile


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]  # fmt: skip


_ALLOW = 0x7FFF0000
_MASKED_EQ = 7


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class Filter:
    """The table as a libseccomp filter, made ready (the library loaded, the rules added)
    while the host's libraries are still reachable, and loaded later with ``load``."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            raise SeccompError(errno.ENOENT, "libseccomp is not installed") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        ]  # fmt: skip
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._context = lib.seccomp_init(_ALLOW)
        if not self._context:
            raise SeccompError(errno.ENOMEM, "seccomp_init failed")
        for arch in _ARCHES.get(os.uname().machine, ())[1:]:
            token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
            if token:
                lib.seccomp_arch_add(self._context, token)  # there already, or not built in
        rules: list[tuple[str, int, list[_ArgCmp]]] = [
            *((call, errno.EPERM, []) for call in DENIED),
            *((call, errno.ENOSYS, []) for call in UNKNOWN),
            *(("clone", errno.EPERM, [_ArgCmp(0, _MASKED_EQ, f, f)]) for f in NAMESPACE_FLAGS),
        ]
        for call, code, arguments in rules:
            number = lib.seccomp_syscall_resolve_name(call.encode())
            if number < 0:
                continue  # not a call of this architecture
            array = (_ArgCmp * len(arguments))(*arguments) if arguments else None
            result = lib.seccomp_rule_add_array(
                self._context, _errno_action(code), number, len(arguments), array
            )
            if result < 0:
                raise SeccompError(-result, f"cannot add a seccomp rule for {call}")

    def load(self) -> None:
        """Apply the filter to this process (and what it executes). Call it last before
        dropping privileges: it refuses ``mount`` and ``pivot_root`` from then on."""
        result = self._lib.seccomp_load(self._context)
        if result < 0:
            raise SeccompError(-result, "cannot load the seccomp filter")
