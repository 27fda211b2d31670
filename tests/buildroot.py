"""kiln's buildroot image (buildroot/Dockerfile), built offline with kiln and loaded into a
Docker engine, for the tests that run kiln inside a privileged container.

The base is a debootstrap of bookworm minbase that already has what the Dockerfile would
install with apt (so its apt step is skipped), cached as a tar in ``$KILN_TEST_CACHE``; kiln
and its dependencies come from a wheelhouse that pip fills (PyPI, or pip's cache).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.debootstrap import debootstrap_tar
from tests.engines import DOCKER_CLIENT, DockerEngine
from tests.processes import kiln_command

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("KILN_TEST_CACHE", "/var/cache/kiln-tests"))
BUILDROOT_TIMINGS: dict[str, float] = {}  # how long each part of the last build took
PACKAGES = ("python3", "python3-venv", "git", "runc", "slirp4netns", "ca-certificates")
BASE_IMAGE = "kiln-test/buildroot-base:bookworm"
IMAGE = "kiln-buildroot:test"
# What pip installs in the image: kiln and its dependencies from the context's wheelhouse only.
PIP_INSTALL = "--no-index --find-links /usr/src/kiln/wheels kiln"


def base_tar(cache_dir: Path = CACHE) -> Path:
    """Debian bookworm minbase with python3, python3-venv, git, runc, slirp4netns and
    ca-certificates,
    kept as a tar in ``cache_dir``."""
    tag = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:8]
    return debootstrap_tar(cache_dir / f"bookworm-buildroot-{tag}.tar", PACKAGES)


def build_context(tmp: Path) -> Path:
    """A copy of what buildroot/Dockerfile's ignore file lets through from the repository,
    plus ``wheels/``: kiln's wheel and its dependencies' (the repository itself is left as
    it is: pip would write build/ and egg-info into it)."""
    context = tmp / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, context / name)
    shutil.copytree(REPO / "src", context / "src", ignore=junk)
    shutil.copytree(REPO / "buildroot", context / "buildroot", ignore=junk)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         str(context), "-w", str(context / "wheels")],
        capture_output=True, text=True, cwd=tmp,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{result.stderr[-3000:]}")
    for leftover in ("build", "src/kiln.egg-info"):
        shutil.rmtree(context / leftover, ignore_errors=True)
    return context


def run_kiln(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [kiln_command(), *args], capture_output=True, text=True, env={**os.environ, **env}
    )
    if result.returncode != 0:
        raise AssertionError(
            f"kiln {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


@contextmanager
def timed(timings: dict[str, float] | None, what: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        if timings is not None:
            timings[what] = round(time.monotonic() - start, 2)


def build_buildroot_image(
    engine: DockerEngine,
    cache_dir: Path,
    tmp: Path,
    *,
    tag: str = IMAGE,
    timings: dict[str, float] | None = None,
) -> str:
    """buildroot/Dockerfile built by kiln (native backend, offline) and loaded into
    ``engine``; returns the tag. ``timings`` (if given) gets each part's seconds."""
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("building the buildroot image needs root and runc")
    env = {"KILN_ROOT": str(tmp / "kiln-root"), "DOCKER_HOST": engine.host}
    with timed(timings, "base tar (debootstrap, cached)"):
        tar = base_tar(cache_dir)
    with timed(timings, "wheelhouse (pip wheel)"):
        context = build_context(tmp)
    with timed(timings, "kiln import"):
        run_kiln("import", str(tar), BASE_IMAGE, env=env)
    with timed(timings, "kiln build --load"):
        run_kiln(  # --network none: RUN steps that reached for apt or PyPI would fail
            "build", "--progress", "plain", "--network", "none", "-t", tag,
            "-f", str(context / "buildroot" / "Dockerfile"),
            "--build-arg", f"BASE={BASE_IMAGE}", "--build-arg", f"PIP_INSTALL={PIP_INSTALL}",
            "--load", str(context),
            env=env,
        )  # fmt: skip
    return tag


# -- running the buildroot privileged ------------------------------------------------------------

# Capability numbers (linux/capability.h) up to the last one Docker 20.10 knows.
_CAPABILITY_NAMES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
    "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
    "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG "
    "WAKE_ALARM BLOCK_SUSPEND AUDIT_READ"
)
CAPABILITIES = _CAPABILITY_NAMES.split()

# What --privileged changes that the emulation has to do inside: /sys and the cgroup
# hierarchies read-write (per mount, as bind remounts: the host's superblocks are untouched).
REMOUNT_RW = (
    "mount -o remount,bind,rw /sys && "
    'for m in $(awk \'$3 == "cgroup" || $3 == "cgroup2" {print $2}\' /proc/mounts); do '
    'mount -o remount,bind,rw "$m" || exit 125; done; '
)


@dataclass(frozen=True)
class Privileged:
    """How a container gets what ``docker run --privileged`` gives: that flag, or (where
    the engine cannot apply every capability) its emulation."""

    flags: tuple[str, ...]
    preamble: str = ""  # shell run inside the container before the test's script
    emulated: str = ""  # why --privileged itself could not be used


def missing_capabilities() -> list[str]:
    """Capabilities this process's bounding set lacks (a dockerd it starts lacks them too)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
            return [name for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1]
    return []


def privileged_mode(engine: DockerEngine, image: str) -> Privileged:
    """``--privileged`` if the engine can start such a container. Some sandboxes run
    everything with a capability bounding set that lacks CAP_SYS_RESOURCE, and runc then
    refuses --privileged ("unable to apply caps: operation not permitted"); there the
    container gets every capability the engine has, no seccomp, AppArmor or masked /proc
    paths, every device allowed, and /sys and the cgroup mounts remounted read-write."""
    probe = docker(engine, "run", "--rm", "--privileged", "--network", "host", image, "true")
    if probe.returncode == 0:
        return Privileged(("--privileged",))
    if "apply caps" not in probe.stderr:
        raise AssertionError(f"docker run --privileged failed: {probe.stderr.strip()}")
    drop = [arg for name in missing_capabilities() for arg in ("--cap-drop", name)]
    flags = (
        "--cap-add", "ALL", *drop, "--security-opt", "seccomp=unconfined",
        "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
        "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/net/tun",
    )  # fmt: skip
    return Privileged(flags, REMOUNT_RW, probe.stderr.strip().splitlines()[-1])


def docker(engine: DockerEngine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER_CLIENT, "-H", engine.host, *args], capture_output=True, text=True, timeout=600
    )


def run_buildroot(
    engine: DockerEngine,
    image: str,
    script: str,
    *,
    privileged: Privileged | None,
    volumes: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``docker run --rm --network host [privileged] -v HOST:CONTAINER... IMAGE sh -c
    SCRIPT``, as atomic-reactor's buildroot mode starts it (the script runs with set -e)."""
    args = ["run", "--rm", "--network", "host", *(privileged.flags if privileged else ())]
    for source, target in (volumes or {}).items():
        args += ["-v", f"{source}:{target}"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    preamble = privileged.preamble if privileged else ""
    return docker(engine, *args, *extra, image, "sh", "-c", f"{preamble}set -e; {script}")


def engine_socket(engine: DockerEngine) -> str:
    """The engine's socket on this machine, to bind into a container."""
    assert engine.host.startswith("unix://"), engine.host
    return engine.host.removeprefix("unix://")
