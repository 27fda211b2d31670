"""Running a process in a root filesystem through an OCI runtime (runc).

Each RUN gets a bundle (in the build's private tmpfs): a ``config.json`` with mount, PID,
IPC and UTS namespaces and the build's network namespace (``kiln.engine.network``), /proc,
/sys, /dev, /dev/shm, Docker's default capabilities, masked and read-only paths and seccomp
profile (``kiln.engine.seccomp``), the image's environment plus the step's build args, the
user and groups resolved from the image's own /etc/passwd and /etc/group, and /etc/hosts and
/etc/resolv.conf bound read-only from the bundle. Mount points that had to be created for
the run are removed afterwards, so none of this lands in the layer. The container's cgroup
is named (``cgroupsPath``), carries the step's resource limits, and is kept until the
step's end has been read from it: an OOM kill becomes an error that says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.engine.network import DEFAULT, NONE, RESOLV_CONF
from kiln.engine.seccomp import runc_profile
from kiln.engine.workspace import RUNC, record_process
from kiln.errors import KilnError
from kiln.tree import Tree, TreeError, create_file, opened, set_metadata

# Every capability, in the order of their numbers (linux/capability.h).
CAPABILITY_NAMES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]  # fmt: skip
# Docker's default set: what a RUN step keeps.
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
_MOUNT_POINTS = ("proc", "sys", "dev", "etc/hosts", "etc/resolv.conf")
LIMITS_NEED_OCI = (
    "--memory, --memory-swap, --cpu-shares and --cpuset-cpus need the oci isolation (runc): "
    "the chroot isolation has no cgroups to enforce them"
)


class ContainerError(KilnError):
    """The runtime could not be started, or the user cannot be resolved."""


class OutOfMemory(ContainerError):
    """The step failed because the kernel killed a process of it for going over its memory
    limit: a plain exit code 137 would leave the user guessing."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"killed: it used more than its memory limit of {_size_text(limit)}")
        self.limit = limit


def _size_text(size: int) -> str:
    """``64 MiB``, ``1.5 GiB``, ``100 bytes``."""
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            return f"{size / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{size} bytes"


@dataclass(frozen=True)
class RuntimeMount:
    """An extra mount for the process (``RUN --mount``): a bind or a tmpfs."""

    destination: str
    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    """cgroup limits on a RUN step, as docker build's ``--memory``, ``--memory-swap``,
    ``--cpu-shares`` and ``--cpuset-cpus`` (docker-py's ``container_limits``). Zero or empty:
    no limit."""

    memory: int = 0  # bytes
    memory_swap: int = 0  # bytes of memory and swap together; -1: unlimited; 0: twice memory
    cpu_shares: int = 0  # relative weight, 2 to 262144
    cpuset_cpus: str = ""  # the CPUs the step may use: "0-3", "0,2"

    def __bool__(self) -> bool:
        return self != Limits()

    @classmethod
    def from_docker(cls, limits: Mapping[str, object]) -> Limits:
        """docker-py's ``container_limits`` (``memory``, ``memswap``, ``cpushares``,
        ``cpusetcpus``); numbers may be strings, as the Engine API's query takes them."""
        unknown = set(limits) - set(DOCKER_LIMITS)
        if unknown:
            raise ContainerError(f"container_limits: unknown keys {', '.join(sorted(unknown))}")
        values: dict[str, object] = {}
        for key, value in limits.items():
            if key == "cpusetcpus":
                values[DOCKER_LIMITS[key]] = str(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                values[DOCKER_LIMITS[key]] = value
            elif isinstance(value, str) and value.removeprefix("-").isdecimal():
                values[DOCKER_LIMITS[key]] = int(value)
            else:
                raise ContainerError(f"container_limits {key}: {value!r} is not a number")
        return cls(**values)  # type: ignore[arg-type]

    def check(self) -> None:
        """Refuse what docker refuses, before any step runs, rather than as runc's error
        about a cgroup file."""
        if self.memory < 0 or self.memory_swap < -1:
            raise ContainerError("--memory and --memory-swap take sizes (--memory-swap: or -1)")
        if 0 < self.memory < 6 << 20:
            raise ContainerError("--memory: the minimum memory limit is 6 MiB")
        if self.memory_swap > 0 and not self.memory:
            raise ContainerError("--memory-swap needs --memory: it limits memory and swap")
        if self.memory_swap > 0 and self.memory_swap < self.memory:
            raise ContainerError("--memory-swap must be at least --memory (memory and swap)")
        if self.cpu_shares and not 2 <= self.cpu_shares <= 262144:
            raise ContainerError(f"--cpu-shares {self.cpu_shares}: from 2 to 262144")
        if self.cpuset_cpus:
            wanted = _cpu_list(self.cpuset_cpus)
            available = os.sched_getaffinity(0)
            if wanted - available:
                raise ContainerError(
                    f"--cpuset-cpus {self.cpuset_cpus}: CPUs "
                    f"{','.join(map(str, sorted(wanted - available)))} are not available "
                    f"(this machine has {','.join(map(str, sorted(available)))})"
                )


# docker-py's container_limits keys, and the fields of Limits they set
DOCKER_LIMITS = {
    "memory": "memory", "memswap": "memory_swap", "cpushares": "cpu_shares",
    "cpusetcpus": "cpuset_cpus",
}  # fmt: skip


def _cpu_list(text: str) -> set[int]:
    """The CPUs of a cpuset list such as ``0-2,5``."""
    cpus: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.strip().partition("-")
        if not first.isdecimal() or (dash and not last.isdecimal()):
            raise ContainerError(f"--cpuset-cpus {text}: expected CPUs such as 0-3 or 0,2")
        cpus.update(range(int(first), int(last if dash else first) + 1))
    return cpus


@dataclass(frozen=True)
class ProcessSpec:
    """What to run, as whom, where, with which environment."""

    args: Sequence[str]
    env: Sequence[str]
    cwd: str = "/"
    user: str = ""
    network: str = DEFAULT  # default (a private namespace, its file is netns), host or none
    netns: str = ""  # the file the build's private network namespace is bound to
    privileged: bool = False  # RUN --security=insecure, allowed: every capability, no seccomp
    hostname: str = "kiln"
    mounts: tuple[RuntimeMount, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (name, address) lines for /etc/hosts
    shm_size: int = 64 << 20  # bytes of /dev/shm
    limits: Limits = Limits()


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


def resolve_user(root: Tree, spec: str) -> User:
    """``user``, ``uid``, ``user:group``... looked up in the image's /etc/passwd and group
    (read through ``kiln.tree``: inside the image, never a FIFO or a device)."""
    name, _, group = (spec or "0").partition(":")
    passwd = _table(root, "/etc/passwd")
    groups = _table(root, "/etc/group")
    entry = next((e for e in passwd if name in (e[0], e[2] if len(e) > 2 else None)), None)
    if name.isdecimal():
        uid = _id(name, spec)
        gid = int(entry[3]) if entry and len(entry) > 3 and _is_id(entry[3]) else 0
    elif entry is not None and len(entry) > 3:
        if not (_is_id(entry[2]) and _is_id(entry[3])):
            raise ContainerError(f"unable to find user {name}: its passwd entry has no numeric "
                                 "uid and gid")  # fmt: skip
        uid, gid = int(entry[2]), int(entry[3])
    else:
        raise ContainerError(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        if group.isdecimal():
            gid = _id(group, spec)
        else:
            found = next((g for g in groups if g[0] == group and len(g) > 2), None)
            if found is None or not _is_id(found[2]):
                raise ContainerError(
                    f"unable to find group {group}: no matching entries in group file"
                )
            gid = int(found[2])
    user_name = entry[0] if entry else ""
    extra = tuple(
        int(g[2])
        for g in groups
        if len(g) > 3 and user_name and user_name in g[3].split(",") and _is_id(g[2])
    )
    return User(uid, gid, tuple(sorted(set(extra) - {gid})))


_MAX_ID = (1 << 32) - 2


def _is_id(text: str) -> bool:
    return text.isdecimal() and text.isascii() and int(text) <= _MAX_ID


def _id(text: str, spec: str) -> int:
    if not _is_id(text):
        raise ContainerError(f"user {spec!r}: {text} is not a valid uid or gid")
    return int(text)


def _table(root: Tree, path: str) -> list[list[str]]:
    try:
        data = root.read(path)
    except TreeError as err:
        raise ContainerError(f"cannot read the image's {path}: {err}") from None
    if data is None:
        return []
    lines = data.decode(errors="replace").splitlines()
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def runtime_available() -> bool:
    return shutil.which(RUNC) is not None


ISOLATIONS = ("oci", "chroot")


def default_isolation() -> str:
    """``KILN_ISOLATION`` if set, else ``oci``: the weaker sandbox is never chosen for the
    user, only asked for."""
    chosen = os.environ.get("KILN_ISOLATION") or "oci"
    if chosen not in ISOLATIONS:
        raise ContainerError(f"KILN_ISOLATION={chosen}: expected one of {', '.join(ISOLATIONS)}")
    return chosen


def check_isolation(isolation: str) -> None:
    """Refuse, before anything runs, an isolation this machine cannot give, saying what is
    missing and how to get it."""
    if isolation != "oci":
        return
    if not runtime_available():
        raise ContainerError(
            "RUN steps run in runc containers, and runc is not installed here "
            "(apt-get install runc); or ask for --isolation chroot (namespaces, pivot_root "
            "and seccomp, without cgroup limits)"
        )
    if not _cgroups_writable():
        raise ContainerError(
            "RUN steps run in runc containers, and runc needs writable cgroups, which this "
            "machine mounts read-only (a container started without --privileged); run kiln "
            "with writable cgroups, or ask for --isolation chroot (namespaces, pivot_root and "
            "seccomp, without cgroup limits)"
        )


def _cgroups_writable(mounts: Path = Path("/proc/self/mounts")) -> bool:
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return True  # cannot tell: let runc say
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[2] in ("cgroup", "cgroup2") and "ro" in fields[3].split(","):
            return False
    return True


class LiveProcesses:
    """The RUN processes of one build that are running now, so that a build that fails in
    one stage, or is cancelled, can stop the others at once instead of waiting them out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stoppers: dict[str, Callable[[], None]] = {}
        self.stopping = False

    def add(self, name: str, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stoppers[name] = stop
            stopping = self.stopping
        if stopping:  # started while the build was being stopped
            stop()

    def remove(self, name: str) -> None:
        with self._lock:
            self._stoppers.pop(name, None)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            stoppers = list(self._stoppers.values())
        for stop in stoppers:
            stop()


def run(
    rootfs: Path,
    spec: ProcessSpec,
    bundle: Path,
    output: Callable[[bytes], None],
    isolation: str | None = None,
    live: LiveProcesses | None = None,
) -> int:
    """Run ``spec`` in ``rootfs`` (a mounted overlay); returns its exit status. ``live``
    gets a way to kill the process for as long as it runs."""
    isolation = isolation or default_isolation()
    check_isolation(isolation)
    bundle.mkdir(parents=True, exist_ok=True)
    if spec.mounts and isolation != "oci":
        raise ContainerError("RUN --mount needs the oci isolation (runc)")
    if spec.limits and isolation != "oci":
        raise ContainerError(LIMITS_NEED_OCI)
    with Tree(rootfs) as root:
        return _run_in(root, spec, bundle, output, isolation, live)


def _run_in(
    root: Tree,
    spec: ProcessSpec,
    bundle: Path,
    output: Callable[[bytes], None],
    isolation: str,
    live: LiveProcesses | None,
) -> int:
    rootfs = root.root
    points = [*_MOUNT_POINTS, *(m.destination.strip("/") for m in spec.mounts)]
    created = _missing(root, points)
    parents = {
        parent: mtime
        for parent in {os.path.dirname(p) for p in created} - set(created) - {""}
        if (mtime := _dir_mtime(root, parent)) is not None
    }
    extra = "".join(f"{address}\t{name}\n" for name, address in spec.extra_hosts)
    (bundle / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{spec.hostname}\n{extra}"
    )
    if spec.network == DEFAULT:
        (bundle / "resolv.conf").write_text(RESOLV_CONF)
    else:
        shutil.copyfile("/etc/resolv.conf", bundle / "resolv.conf")
    user = resolve_user(root, spec.user)
    container = f"kiln-{uuid.uuid4().hex[:12]}"
    out_of_memory = False
    try:
        if isolation == "oci":
            config = _config(rootfs, bundle, spec, user, container)
            (bundle / "config.json").write_text(json.dumps(config))
            # --keep: the container's cgroup outlives its process, to be read before delete
            command = [RUNC, "--root", str(bundle / "state"), "run", "--keep"]
            command += ["--bundle", str(bundle)]
            command.append(container)
        else:
            _make_mount_stubs(root, created)
            (bundle / "chroot.json").write_text(
                json.dumps(_chroot_spec(rootfs, bundle, spec, user))
            )
            command = [sys.executable, "-m", "kiln.engine.chroot", str(bundle / "chroot.json")]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one (see _stopper)
        )
        if isolation != "oci":
            record_process(bundle, process.pid)  # runc's containers are found by its state
        if live is not None:
            live.add(container, _stopper(process, isolation, bundle, container))
        assert process.stdout is not None
        try:
            for line in iter(process.stdout.readline, b""):
                output(line)
            status = process.wait()
        finally:
            if live is not None:
                live.remove(container)
            if process.poll() is None:  # interrupted (a signal): the step goes with us
                _stopper(process, isolation, bundle, container)()
                process.wait()
        if status != 0 and spec.limits.memory and isolation == "oci":
            out_of_memory = _oom_kills(container) > 0
    finally:
        if isolation == "oci":
            subprocess.run(
                [RUNC, "--root", str(bundle / "state"), "delete", "--force", container],
                capture_output=True,
            )
        _remove_mount_stubs(root, created)
        for parent, mtime in parents.items():  # as if no stub had ever been made
            with contextlib.suppress(OSError, TreeError):
                entry = root.entry(parent, follow=True)
                with opened(entry.parent):
                    set_metadata(entry.parent, entry.name, mtime_ns=mtime)
    if out_of_memory:
        raise OutOfMemory(spec.limits.memory)
    return status


def _oom_kills(cgroup: str) -> int:
    """How many processes the kernel's OOM killer has killed in a container's memory cgroup
    (``cgroup``: its cgroupsPath, which runc takes relative to its own cgroup, ours)."""
    directory = _own_memory_cgroup() / cgroup
    for name in ("memory.events", "memory.oom_control"):  # cgroup v2, v1
        with contextlib.suppress(OSError):
            for line in (directory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def _own_memory_cgroup() -> Path:
    """The directory of this process's memory cgroup: in the v1 hierarchy that has the
    memory controller (hybrid hosts too), or else in the v2 one."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path
    v1 = next((c for c in own if "memory" in c.split(",")), None)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        root, mountpoint = fields.split()[3:5]
        fstype, _, options = tail.split()[:3]
        mounted = (
            (fstype == "cgroup" and "memory" in options.split(",")) if v1 else (fstype == "cgroup2")
        )
        if mounted:
            path = own[v1] if v1 else own[""]
            return Path(mountpoint) / os.path.relpath(path, root)
    return Path("/sys/fs/cgroup")


def _stopper(
    process: subprocess.Popen[bytes], isolation: str, bundle: Path, container: str
) -> Callable[[], None]:
    """How to kill a running step: runc kills the container's processes; the chroot
    helper's process group holds everything it started."""

    def stop() -> None:
        if isolation == "oci":
            subprocess.run(
                [RUNC, "--root", str(bundle / "state"), "kill", "--all", container, "KILL"],
                capture_output=True,
            )
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    return stop


def _make_mount_stubs(root: Tree, created: list[str]) -> None:
    """What runc would create for its mounts, for the chroot isolation to mount on."""
    for relative in created:
        entry = root.entry(relative, follow=True, make=(0, 0))
        with opened(entry.parent):
            if entry.lstat() is not None:
                continue
            if relative in ("etc/hosts", "etc/resolv.conf"):
                os.close(create_file(entry.parent, entry.name))
            else:
                os.mkdir(entry.name, 0o755, dir_fd=entry.parent)


def _chroot_spec(rootfs: Path, bundle: Path, spec: ProcessSpec, user: User) -> dict[str, object]:
    return {
        "rootfs": str(rootfs),
        "bundle": str(bundle),
        "args": list(spec.args),
        "env": list(spec.env),
        "cwd": spec.cwd or "/",
        "hostname": spec.hostname,
        "network": spec.network,
        "netns": spec.netns,
        "privileged": spec.privileged,
        "shm_size": spec.shm_size,
        "user": {"uid": user.uid, "gid": user.gid, "additional_gids": list(user.additional_gids)},
    }


def _missing(root: Tree, points: list[str]) -> list[str]:
    """Every mount point, and every directory above one, that does not exist yet."""
    missing: set[str] = set()
    for point in points:
        parts = point.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            fd = root.lookup(prefix)
            if fd is None:
                missing.add(prefix)
            else:
                os.close(fd)
    return sorted(missing)


def _dir_mtime(root: Tree, path: str) -> int | None:
    fd = root.lookup(path)
    if fd is None:
        return None
    with opened(fd):
        st = os.fstat(fd)
    return st.st_mtime_ns if stat.S_ISDIR(st.st_mode) else None


def _remove_mount_stubs(root: Tree, created: list[str]) -> None:
    """Mount points (and directories above them) made for the run: gone again, deepest first,
    if they are still empty stubs."""
    for relative in sorted(created, key=lambda p: p.count("/"), reverse=True):
        try:
            entry = root.entry(relative, follow=True)
        except (OSError, TreeError):
            continue
        with opened(entry.parent):
            st = entry.lstat()
            if st is None or not entry.name:
                continue
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(entry.name, dir_fd=entry.parent)
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(entry.name, dir_fd=entry.parent)


def _config(
    rootfs: Path, bundle: Path, spec: ProcessSpec, user: User, cgroup: str
) -> dict[str, object]:
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network == NONE:
        namespaces.append({"type": "network"})
    elif spec.network == DEFAULT:
        namespaces.append({"type": "network", "path": spec.netns})
    capabilities = _all_capabilities() if spec.privileged else CAPABILITIES
    return {
        "ociVersion": "1.0.2",
        "hostname": spec.hostname,
        "root": {"path": str(rootfs), "readonly": False},
        "process": {
            "terminal": False,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                **({"additionalGids": list(user.additional_gids)} if user.additional_gids else {}),
            },
            "cwd": spec.cwd or "/",
            "args": list(spec.args),
            "env": list(spec.env),
            "noNewPrivileges": False,
            "capabilities": {k: capabilities for k in ("bounding", "effective", "permitted")},
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={spec.shm_size}"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/etc/hosts",
                "type": "bind",
                "source": str(bundle / "hosts"),
                "options": ["rbind", "ro"],
            },
            {
                "destination": "/etc/resolv.conf",
                "type": "bind",
                "source": str(bundle / "resolv.conf"),
                "options": ["rbind", "ro"],
            },
            *(
                {
                    "destination": m.destination,
                    "type": m.type,
                    "source": m.source,
                    "options": list(m.options),
                }
                for m in spec.mounts
            ),
        ],
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroup,  # relative: under kiln's own cgroup, where _oom_kills looks
            **({"resources": _resources(spec.limits)} if spec.limits else {}),
            **({} if spec.privileged else _docker_defaults()),
        },
    }


def _docker_defaults() -> dict[str, object]:
    """What Docker's default container config hides and protects, and its seccomp profile."""
    return {
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
            "/sys/firmware", "/sys/devices/virtual/powercap",
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
        ],
        "seccomp": runc_profile(),
    }  # fmt: skip


def _all_capabilities() -> list[str]:
    """Every capability kiln itself may hand on (its own bounding set), for a step allowed
    security.insecure: asking runc for one more fails the step."""
    bounding = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
    return [f"CAP_{name}" for number, name in enumerate(CAPABILITY_NAMES) if bounding >> number & 1]


def _resources(limits: Limits) -> dict[str, object]:
    """The runtime spec's ``linux.resources`` for ``limits``. As docker, a memory limit
    without a swap limit allows as much swap again (``swap`` is memory and swap together)."""
    memory: dict[str, int] = {}
    if limits.memory:
        memory = {"limit": limits.memory, "swap": limits.memory_swap or 2 * limits.memory}
    cpu: dict[str, object] = {}
    if limits.cpu_shares:
        cpu["shares"] = limits.cpu_shares
    if limits.cpuset_cpus:
        cpu["cpus"] = limits.cpuset_cpus
    return {name: value for name, value in (("memory", memory), ("cpu", cpu)) if value}
