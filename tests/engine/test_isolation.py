"""RUN under both isolations: runc (oci) and kiln's own chroot-style one."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building needs root")

DOCKERFILE = (
    "FROM busybox:base\n"
    'RUN echo "pid $$ host $(hostname) uid $(id -u)" > /info && ls /dev > /devs && rm /bin/vi\n'
    "USER nobody\nRUN id -u > /tmp/uid\n"
)


def kiln(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return result.stdout


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_rootfs: Path) -> Path:
    monkeypatch.setenv("KILN_ROOT", str(tmp_path / "kiln-root"))
    kiln("import", str(busybox_rootfs), "busybox:base")
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    return root


def layers(tmp_path: Path, tag: str) -> list[list[str]]:
    image = json.loads(kiln("inspect", tag))[0]
    blobs = tmp_path / "kiln-root" / "blobs" / "sha256"
    manifest = json.loads((blobs / image["Manifest"][7:]).read_text())
    names = []
    for layer in manifest["layers"][1:]:
        with tarfile.open(blobs / layer["digest"][7:]) as tar:
            names.append(sorted(tar.getnames()))
    return names


@pytest.mark.parametrize("isolation", ["oci", "chroot"])
def test_run_is_isolated_and_leaves_no_mount_points(
    context: Path, tmp_path: Path, isolation: str
) -> None:
    if isolation == "oci" and not Path("/usr/sbin/runc").exists():
        pytest.skip("runc is not installed")
    kiln("build", "-q", "--isolation", isolation, "-t", f"iso:{isolation}", str(context))
    info = kiln("run", f"iso:{isolation}", "cat", "/info", "/tmp/uid")
    assert info == "pid 1 host kiln uid 0\n65534\n"
    devices = set(kiln("run", f"iso:{isolation}", "cat", "/devs").split())
    assert {"null", "zero", "urandom", "shm"} <= devices
    first, second = layers(tmp_path, f"iso:{isolation}")
    assert first == ["bin", "bin/.wh.vi", "devs", "info"]
    assert second == ["tmp", "tmp/uid"]


def test_runc_is_not_chosen_where_cgroups_are_read_only(tmp_path: Path) -> None:
    from kiln.engine.runtime import _cgroups_writable

    mounts = tmp_path / "mounts"
    mounts.write_text(
        "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\n"
    )
    assert _cgroups_writable(mounts)  # a read-only tmpfs above the controllers is usual
    mounts.write_text(
        "cgroup /sys/fs/cgroup/memory cgroup ro,nosuid,nodev,noexec,relatime,memory 0 0\n"
    )
    assert not _cgroups_writable(mounts)  # a container without --privileged
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec,relatime 0 0\n")
    assert not _cgroups_writable(mounts)
