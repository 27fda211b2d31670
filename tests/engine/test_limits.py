"""Resource limits on RUN steps (``kiln build --memory/--memory-swap/--cpu-shares/--cpuset-cpus``,
docker-py's and incubator's ``container_limits``), enforced by runc's cgroups; and the
network a step gets (``--network none``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kiln.api import BuildError, Client, NotSupported
from kiln.api.incubator import build as incubator_build
from kiln.cli.main import cli
from kiln.reference import Reference
from kiln.store.transfer import import_rootfs
from tests.engine.support import NEEDS_RUNC, context, invoke
from tests.engines import DockerEngine

pytestmark = NEEDS_RUNC

# Holds 100 MiB: busybox tail keeps the whole last "line", and /dev/zero has no newline.
GREEDY = "head -c 100m /dev/zero | tail > /dev/null"
LAST_CPU = str(max(os.sched_getaffinity(0)))
V1_CGROUPS = Path("/sys/fs/cgroup/cpu/cpu.shares").exists()


@pytest.fixture
def client(tmp_path: Path, busybox_rootfs: Path) -> Client:
    client = Client(root=tmp_path / "store")
    assert client.store is not None
    import_rootfs(client.store, busybox_rootfs, Reference.parse("busybox:base"))
    return client


def build(*args: str) -> Result:
    return CliRunner().invoke(cli, ["build", *args])


def test_a_step_over_its_memory_limit_fails_and_says_so(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM busybox:base\nRUN echo small\nRUN {GREEDY}\n")
    failed = build("-t", "greedy:1", "--memory", "32m", "--memory-swap", "32m", str(ctx))
    assert failed.exit_code == 1
    assert (
        f"Dockerfile:3: RUN {GREEDY} was killed: it used more than its memory limit of 32 MiB "
        "(--memory)"
    ) in failed.output
    assert "greedy:1" not in invoke("images").output
    # The same step fits without a limit, and under a big one.
    assert invoke("build", "-t", "greedy:1", str(ctx)).output.count("CACHED") == 1  # echo
    roomy = invoke("build", "--no-cache", "-m", "512m", "--memory-swap", "-1", str(ctx))
    assert "killed" not in roomy.output and "CACHED" not in roomy.output
    # Limits are not part of a step's cache key (as in docker's builder).
    assert invoke("build", "-m", "64m", str(ctx)).output.count("CACHED") == 2


def test_a_failure_that_is_not_the_memory_limit_says_what_it_was(
    kiln_root: Path, tmp_path: Path
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN exit 137\n")
    failed = build("-m", "32m", str(ctx))
    assert failed.exit_code == 1
    assert "RUN exit 137 failed with exit code 137" in failed.output


def test_cpuset_cpus_is_what_the_step_may_run_on(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN grep Cpus_allowed_list /proc/self/status\n")
    ran = invoke("build", "--cpuset-cpus", LAST_CPU, "--no-cache", str(ctx)).output
    assert f"Cpus_allowed_list:\t{LAST_CPU}\n" in ran
    if len(os.sched_getaffinity(0)) > 1:
        assert f"Cpus_allowed_list:\t{LAST_CPU}\n" not in invoke("build", str(ctx)).output


@pytest.mark.skipif(not V1_CGROUPS, reason="reads cgroup v1 files")
def test_the_limits_are_the_steps_cgroup(kiln_root: Path, tmp_path: Path) -> None:
    """Read from inside the step: its own cgroup's files, through a volume of the host's
    cgroup hierarchies."""
    show = "; ".join(
        f"cat /cg/{controller}$(grep -E '^[0-9]+:([a-z,]*,)?{controller}(,[a-z,]*)?:' "
        f"/proc/self/cgroup | cut -d: -f3)/{name}"
        for controller, name in (
            ("cpu", "cpu.shares"),
            ("memory", "memory.limit_in_bytes"),
            ("memory", "memory.memsw.limit_in_bytes"),
        )
    )
    ctx = context(tmp_path, f"FROM busybox:base\nRUN {{ {show}; }} > /limits.txt\n")
    out = tmp_path / "out"
    invoke("build", "-v", "/sys/fs/cgroup:/cg:ro", "-c", "512", "-m", "64m",
           "-o", f"type=local,dest={out}", str(ctx))  # fmt: skip
    # the shares, the memory limit and, as docker allows, as much swap again
    assert (out / "limits.txt").read_text().split() == ["512", str(64 << 20), str(128 << 20)]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-m", "1m"], "the minimum memory limit is 6 MiB"),
        (["--memory-swap", "64m"], "--memory-swap needs --memory"),
        (["-m", "64m", "--memory-swap", "32m"], "--memory-swap must be at least --memory"),
        (["-c", "1"], "--cpu-shares 1: from 2 to 262144"),
        (["--cpuset-cpus", "4096"], "--cpuset-cpus 4096: CPUs 4096 are not available"),
        (["--cpuset-cpus", "one"], "expected CPUs such as 0-3 or 0,2"),
        (["--isolation", "chroot", "-m", "64m"], "need the oci isolation (runc)"),
        (["--isolation", "chroot", "--cpuset-cpus", "0"], "need the oci isolation (runc)"),
    ],
)
def test_limits_that_cannot_be_applied_are_refused_before_any_step(
    kiln_root: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo ran\n")
    refused = build(*flags, str(ctx))
    assert refused.exit_code == 1
    assert message in refused.output and "ran" not in refused.output


def test_sizes_are_checked_and_source_builds_take_no_limits(
    kiln_root: Path, tmp_path: Path
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\n")
    refused = build("--memory", "lots", str(ctx))
    assert refused.exit_code == 2 and "--memory" in refused.output
    refused = build("--source", str(ctx), "--cpuset-cpus", "0")
    assert refused.exit_code == 2 and "--cpuset-cpus: not with --source" in refused.output


def test_docker_py_container_limits(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, f"FROM busybox:base\nRUN {GREEDY}\n")
    with pytest.raises(BuildError, match="used more than its memory limit of 48 MiB"):
        client.images.build(path=str(ctx), container_limits={"memory": 48 << 20,
                                                             "memswap": 48 << 20})  # fmt: skip
    ctx = context(tmp_path, "FROM busybox:base\nRUN grep Cpus_allowed_list /proc/self/status\n")
    _, log = client.images.build(path=str(ctx), container_limits={
        "memory": 512 << 20, "memswap": -1, "cpushares": 100, "cpusetcpus": LAST_CPU,
    })  # fmt: skip
    assert f"Cpus_allowed_list:\t{LAST_CPU}\n" in "".join(e.get("stream", "") for e in log)
    with pytest.raises(NotSupported, match="container_limits cpuquota"):
        client.images.build(path=str(ctx), container_limits={"cpuquota": 50000})


def test_incubator_passes_container_limits_through(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN grep Cpus_allowed_list /proc/self/status\n")
    image = incubator_build(path=str(ctx), container_client=client,
                            config={"container_limits": {"cpusetcpus": LAST_CPU}})  # fmt: skip
    assert f"Cpus_allowed_list:\t{LAST_CPU}\n" in "".join(e.get("stream", "") for e in image.logs)
    ctx = context(tmp_path, f"FROM busybox:base\nRUN {GREEDY}\n")
    with pytest.raises(BuildError, match="memory limit of 32 MiB"):
        incubator_build(path=str(ctx), container_client=client,
                        container_limits={"memory": "33554432", "memswap": 32 << 20})  # fmt: skip


def test_each_network_mode_shows_its_interfaces(kiln_root: Path, tmp_path: Path) -> None:
    """default: a namespace of the build's own (loopback and slirp4netns's tap0); host: the
    host's interfaces; none: loopback alone."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    host = sorted(line.split(":")[0].strip() for line in lines)
    if host == ["lo"]:
        pytest.skip("this host has no network interface but loopback")
    interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort"
    ctx = context(tmp_path, f"FROM busybox:base\nRUN {interfaces} > /default.txt\n"
                            f"RUN --network=none {interfaces} > /none.txt\n")  # fmt: skip

    def seen(*flags: str) -> tuple[list[str], list[str]]:
        out = tmp_path / "-".join(["out", *flags])
        invoke("build", *flags, "-o", f"type=local,dest={out}", str(ctx))
        return (out / "default.txt").read_text().split(), (out / "none.txt").read_text().split()

    assert seen() == (["lo", "tap0"], ["lo"])
    assert seen("--network", "host") == (host, ["lo"])
    assert seen("--network", "none") == (["lo"], ["lo"])


def test_the_docker_backend_gets_the_limits(
    client: Client, tmp_path: Path, docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(b"".join(client.images.get("busybox:base").save(named=True)))
    docker_engine.run("load", "-i", str(archive))
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    ctx = context(tmp_path, "FROM busybox:base\nRUN grep Cpus_allowed_list /proc/self/status\n")
    ran = build("--backend", "docker", "--no-cache", "--cpuset-cpus", LAST_CPU, str(ctx))
    assert ran.exit_code == 0 and f"Cpus_allowed_list:\t{LAST_CPU}\n" in ran.output
    ctx = context(tmp_path, f"FROM busybox:base\nRUN {GREEDY}\n")
    killed = build("--backend", "docker", "-m", "32m", "--memory-swap", "32m", str(ctx))
    assert killed.exit_code == 1 and "code: 137" in killed.output
