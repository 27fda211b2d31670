"""Fixtures that start real collaborators for the tests that need them, and stop them after."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debootstrap import debootstrap_tar
from tests.engines import DOCKER_CLIENT, DockerEngine
from tests.gitserver import git_server  # noqa: F401 -- a fixture for every test package
from tests.registries import Registry, start_registry, write_htpasswd


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """A dockerd of our own (own data root, socket and exec root), no network setup."""
    if shutil.which("dockerd") is None or not Path(DOCKER_CLIENT).exists():
        pytest.skip("Debian's docker.io is not installed (.ci/run installs it)")
    if os.geteuid() != 0:
        pytest.skip("starting a private dockerd needs root")
    # Socket paths must stay short (108 bytes), so the daemon lives under /tmp directly.
    base = Path(tmp_path_factory.mktemp("dockerd", numbered=True))
    short = Path("/tmp") / f"kiln-dockerd-{os.getpid()}"
    short.mkdir(exist_ok=True)
    host = f"unix://{short}/docker.sock"
    log = open(base / "dockerd.log", "wb")  # noqa: SIM115 -- closed after the daemon stops
    daemon = subprocess.Popen(
        [
            "dockerd", "--data-root", str(base / "data"), "--exec-root", str(short / "exec"),
            "--pidfile", str(short / "docker.pid"), "--host", host, "--bridge", "none",
            "--iptables=false", "--ip-masq=false", "--storage-driver", "overlay2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    engine = DockerEngine(host)
    try:
        deadline = time.monotonic() + 60
        while not engine.ready():
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (base / "dockerd.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"dockerd did not start:\n{tail}")
            time.sleep(0.2)
        yield engine
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        # dockerd leaves its default network namespace bound here; unbind it, or every
        # run leaves a mount behind.
        for mount in (short / "exec" / "netns").glob("*"):
            subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root filesystem of Debian's busybox-static, every applet linked, with root's
    passwd and group entries: the smallest realistic base image, made offline."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("Debian's busybox-static is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("busybox-rootfs")
    for directory in ("bin", "etc", "root", "tmp", "var/tmp"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "tmp").chmod(0o1777)
    return root


DEBIAN_CACHE = Path(os.environ.get("KILN_TEST_CACHE", "/var/cache/kiln-tests"))


@pytest.fixture(scope="session")
def debian_rootfs_tar() -> Path:
    """A Debian bookworm minbase root filesystem (debootstrap, about 40 s), as a tar kept in
    ``$KILN_TEST_CACHE`` so later runs on the machine reuse it."""
    return debootstrap_tar(DEBIAN_CACHE / "bookworm-minbase.tar")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """An anonymous plain-HTTP registry on a free loopback port."""
    started = start_registry(tmp_path / "registry")
    yield started
    started.stop()


@pytest.fixture
def basic_auth_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry that wants Basic auth: user ``kiln``, password ``s3cret-pw``."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"kiln": "s3cret-pw"})
    started = start_registry(tmp_path / "registry", htpasswd=htpasswd)
    yield started
    started.stop()


@pytest.fixture
def kiln_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_rootfs: Path) -> Path:
    """``$KILN_ROOT`` for the test, holding ``busybox:base``."""
    from tests.engine.support import invoke

    root = tmp_path / "kiln-root"
    monkeypatch.setenv("KILN_ROOT", str(root))
    invoke("import", str(busybox_rootfs), "busybox:base")
    return root
