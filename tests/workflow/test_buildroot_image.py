"""kiln's buildroot image (buildroot/Dockerfile) in a private dockerd, started as
atomic-reactor's buildroot mode starts it: privileged, on the host's network, with a shared
directory on /run/kiln. Inside, kiln builds natively (runc, overlay snapshots), on the host's
engine through its socket, and pushes to a registry on the host's loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.buildroot import (
    BUILDROOT_TIMINGS,
    Privileged,
    engine_socket,
    run_buildroot,
    run_kiln,
)
from tests.engines import DockerEngine
from tests.processes import program
from tests.registries import Registry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("runc") is None,
        reason="building the buildroot image needs root and runc (.ci/run installs it)",
    ),
]

DOCKERFILE = """\
FROM busybox:base
COPY greeting.txt /greeting.txt
RUN echo "built inside: $(cat /greeting.txt)" > /msg
CMD ["cat", "/msg"]
"""
COPY_NOTICE = "using the copy-based snapshotter"
# Whether runc can make a cgroup here: every cgroup hierarchy mounted read-write (the check
# kiln could make before choosing its isolation).
CGROUP_PROBE = (
    'python3 -c \'ms = [l.split() for l in open("/proc/self/mounts")]; '
    'ro = [m[1] for m in ms if m[2] in ("cgroup", "cgroup2") and "ro" in m[3].split(",")]; '
    'print("cgroups", "ro" if ro else "rw")\'; '
)
BUILD = (
    "kiln import /run/kiln/busybox.tar busybox:base; "
    "kiln build --progress plain -t buildroot-test/inside:1 /run/kiln/context; "
    "kiln images; kiln run --rm buildroot-test/inside:1"
)


@pytest.fixture(scope="session")
def busybox_tar(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tar = tmp_path_factory.mktemp("busybox-tar") / "busybox.tar"
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(tar), "."], check=True)
    return tar


@pytest.fixture
def shared(tmp_path: Path, busybox_tar: Path) -> Path:
    """The directory bound on /run/kiln: a busybox rootfs tar and a build context."""
    shared = tmp_path / "shared"
    (shared / "context").mkdir(parents=True)
    os.link(busybox_tar, shared / "busybox.tar")
    (shared / "context" / "Dockerfile").write_text(DOCKERFILE)
    (shared / "context" / "greeting.txt").write_text("hello\n")
    return shared


def succeeded(result: subprocess.CompletedProcess[str], privileged: Privileged | None) -> str:
    emulated = privileged.emulated if privileged else ""
    mode = f" (--privileged emulated: {emulated})" if emulated else ""
    assert result.returncode == 0, (
        f"exit {result.returncode}{mode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


def test_the_buildroot_image(docker_engine: DockerEngine, buildroot_image: str) -> None:
    print("buildroot image built in", json.dumps(BUILDROOT_TIMINGS))
    script = (
        'kiln --version; echo "$KILN_ROOT"; pwd; test ! -e /usr/src/kiln && echo no-sources; '
        "for tool in kiln python3 runc git; do command -v $tool; done; "
        "/usr/bin/python3 -c 'import sys; print(sys.version_info[:2])'"
    )
    out = docker_engine.run("run", "--rm", "--network", "none", buildroot_image, "sh", "-c", script)
    version = out.split()[2]
    assert out.splitlines() == [
        f"kiln, version {version}", "/var/lib/kiln", "/run/kiln", "no-sources",
        # /opt/kiln/bin comes first on PATH: python3 is the venv's (kiln importable)
        "/opt/kiln/bin/kiln", "/opt/kiln/bin/python3", "/usr/sbin/runc", "/usr/bin/git",
        "(3, 11)",
    ]  # fmt: skip
    config = json.loads(docker_engine.run("inspect", buildroot_image))[0]["Config"]
    assert config["Volumes"] == {"/var/lib/kiln": {}}
    assert config["Entrypoint"] is None and config["Cmd"] == ["kiln", "--help"]


def test_native_build_inside_with_runc(
    docker_engine: DockerEngine, buildroot_image: str, privileged: Privileged, shared: Path
) -> None:
    """The default store (the image's VOLUME, an anonymous volume on the engine's disk):
    overlay snapshots, RUN through runc; the image built inside runs inside and, saved to
    the shared directory, in the host's engine."""
    result = run_buildroot(
        docker_engine, buildroot_image,
        CGROUP_PROBE + BUILD + "; kiln save -o /run/kiln/inside.tar buildroot-test/inside:1",
        privileged=privileged, volumes={str(shared): "/run/kiln"},
    )  # fmt: skip
    out = succeeded(result, privileged)
    assert "cgroups rw" in out
    assert re.search(r"^buildroot-test/inside +1 ", out, re.M)
    assert out.endswith("built inside: hello\n")
    assert COPY_NOTICE not in result.stderr
    docker_engine.run("load", "-i", str(shared / "inside.tar"))
    assert docker_engine.run("run", "--rm", "--network", "none", "buildroot-test/inside:1") == (
        "built inside: hello\n"
    )


@pytest.mark.parametrize(
    ("where", "snapshotter"),
    [
        ("host directory", "overlay"),
        ("tmpfs", "overlay"),
        ("container root filesystem", "copy"),
    ],
)
def test_where_the_store_lives(
    docker_engine: DockerEngine,
    buildroot_image: str,
    privileged: Privileged,
    shared: Path,
    tmp_path: Path,
    where: str,
    snapshotter: str,
) -> None:
    """overlayfs refuses an upper dir on overlayfs ("overlay: filesystem on ... not
    supported as upperdir"): a store on the container's own root filesystem falls back to
    the copy snapshotter (same images, each RUN step copying the whole root filesystem);
    a bind-mounted host directory or a tmpfs (even Docker's default noexec one) keeps
    overlay snapshots."""
    volumes = {str(shared): "/run/kiln"}
    env: dict[str, str] = {}
    extra: tuple[str, ...] = ()
    store = tmp_path / "store"
    if where == "host directory":
        store.mkdir()
        volumes[str(store)] = "/var/lib/kiln"
    elif where == "tmpfs":
        extra = ("--tmpfs", "/var/lib/kiln")
    else:
        env = {"KILN_ROOT": "/tmp/kiln-root"}
    result = run_buildroot(
        docker_engine, buildroot_image, BUILD,
        privileged=privileged, volumes=volumes, env=env, extra=extra,
    )  # fmt: skip
    out = succeeded(result, privileged)
    assert out.endswith("built inside: hello\n")
    assert (COPY_NOTICE in result.stderr) == (snapshotter == "copy"), result.stderr
    if where == "host directory":  # the store outlives the container, and the host reads it
        listing = run_kiln("images", env={"KILN_ROOT": str(store)})
        assert re.search(r"^buildroot-test/inside +1 ", listing, re.M)


def test_without_writable_cgroups_kiln_says_so_and_chroot_is_asked_for(
    docker_engine: DockerEngine, buildroot_image: str, shared: Path
) -> None:
    """Not privileged, only CAP_SYS_ADMIN (and CAP_NET_ADMIN and /dev/net/tun, for the default
    network: slirp4netns makes its tap device): the
    cgroup hierarchies are mounted read-only and runc cannot make the step's cgroup. kiln
    says so before any step runs, and never falls back to a weaker sandbox by itself; with
    --isolation chroot (or KILN_ISOLATION=chroot) it builds."""
    unprivileged = Privileged(
        ("--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--device", "/dev/net/tun")
    )
    build = "kiln build --progress plain -t buildroot-test/inside"
    script = (
        f"{CGROUP_PROBE}kiln import /run/kiln/busybox.tar busybox:base; "
        f"{build}:oci /run/kiln/context || echo runc refused; "
        f"{build}:1 --isolation chroot /run/kiln/context; "
        f"KILN_ISOLATION=chroot {build}:2 /run/kiln/context; "
        "kiln images; kiln save -o /run/kiln/inside.tar buildroot-test/inside:1"
    )
    result = run_buildroot(
        docker_engine, buildroot_image, script,
        privileged=unprivileged, volumes={str(shared): "/run/kiln"},
    )  # fmt: skip
    out = succeeded(result, unprivileged)
    assert "cgroups ro" in out and "runc refused" in out
    assert "runc needs writable cgroups, which this machine mounts read-only" in result.stderr
    assert "--isolation chroot" in result.stderr
    assert re.search(r"^buildroot-test/inside +1 ", out, re.M)
    assert re.search(r"^buildroot-test/inside +2 ", out, re.M)
    assert not re.search(r"^buildroot-test/inside +oci ", out, re.M)
    docker_engine.run("load", "-i", str(shared / "inside.tar"))
    assert docker_engine.run("run", "--rm", "--network", "none", "buildroot-test/inside:1") == (
        "built inside: hello\n"
    )


def test_docker_backend_inside_builds_on_the_hosts_engine(
    docker_engine: DockerEngine,
    buildroot_image: str,
    privileged: Privileged,
    shared: Path,
) -> None:
    """The engine's socket bound on /var/run/docker.sock: ``kiln build --backend docker``
    inside builds into the engine outside (its builder cannot pull: the base is loaded)."""
    docker_engine.run("import", str(shared / "busybox.tar"), "buildroot-test/busybox:base")
    (shared / "context" / "Dockerfile").write_text(
        DOCKERFILE.replace("busybox:base", "buildroot-test/busybox:base")
    )
    result = run_buildroot(
        docker_engine, buildroot_image,
        "kiln build --backend docker --progress plain -t buildroot-test/from-inside:1 "
        "/run/kiln/context",
        privileged=privileged,
        volumes={str(shared): "/run/kiln", engine_socket(docker_engine): "/var/run/docker.sock"},
    )  # fmt: skip
    succeeded(result, privileged)
    assert (
        docker_engine.run("run", "--rm", "--network", "none", "buildroot-test/from-inside:1")
        == "built inside: hello\n"
    )


def test_push_from_inside_to_a_registry_on_the_hosts_loopback(
    docker_engine: DockerEngine,
    buildroot_image: str,
    privileged: Privileged,
    shared: Path,
    registry: Registry,
) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (.ci/run installs it)")
    destination = f"{registry.host}/buildroot/inside:1"
    result = run_buildroot(
        docker_engine, buildroot_image,
        BUILD + f"; kiln push buildroot-test/inside:1 {destination}",
        privileged=privileged, volumes={str(shared): "/run/kiln"},
    )  # fmt: skip
    out = succeeded(result, privileged)
    said = out + result.stderr
    pushed = re.search(rf"^Pushed {re.escape(destination)}@(sha256:[0-9a-f]{{64}})$", said, re.M)
    assert pushed, said
    inspected = subprocess.run(
        [program("skopeo"), "inspect", "--tls-verify=false", f"docker://{destination}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    manifest = json.loads(inspected.stdout)
    assert manifest["Digest"] == pushed.group(1)
    assert len(manifest["Layers"]) == 3  # busybox, COPY, RUN
