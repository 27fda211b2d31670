"""RUN --mount on real builds: ssh agents, secrets (from files and variables, and nowhere in
the store afterwards), binds of the context as .dockerignore leaves it, and cache mounts
that outlive a build until ``kiln prune --cache-mounts``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kiln.cli.main import cli
from tests.engine.support import NEEDS_RUNC, context, invoke, layer_names, unpack

pytestmark = NEEDS_RUNC


def build(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, ["build", "--progress", "plain", *args])


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[Path]:
    """A real ssh-agent holding one new key."""
    if shutil.which("ssh-agent") is None:
        pytest.skip("openssh-client is not installed (.ci/run installs it)")
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / "key")], check=True)  # fmt: skip
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(tmp_path / "key")], check=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(socket)},
                       capture_output=True)  # fmt: skip
        yield socket
    finally:
        agent.terminate()
        agent.wait()


# Asks the agent for its identities (SSH2_AGENTC_REQUEST_IDENTITIES) and prints the answer's
# type (12: SSH2_AGENT_IDENTITIES_ANSWER) and key count; perl-base is in Debian's minbase.
ASK_AGENT = (
    "perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ENV{SSH_AUTH_SOCK}) "
    'or die "connect: $!"; print $s pack("NC", 1, 11); read($s, $h, 4); '
    'read($s, $b, unpack("N", $h)); ($t, $k) = unpack("CN", $b); print "type=$t keys=$k\\n"\''
)


def test_an_ssh_mount_forwards_the_agent_and_leaves_no_trace(
    kiln_root: Path, tmp_path: Path, debian_rootfs_tar: Path, ssh_agent: Path
) -> None:
    invoke("import", str(debian_rootfs_tar), "debian:bookworm")
    ctx = context(tmp_path, f"FROM debian:bookworm\nRUN --mount=type=ssh {ASK_AGENT} > /agent\n")
    result = build("--ssh", f"default={ssh_agent}", "-t", "app:ssh", str(ctx))
    assert result.exit_code == 0, result.output
    rootfs = unpack(kiln_root, "ssh", tmp_path)
    assert (rootfs / "agent").read_text() == "type=12 keys=1\n"
    assert not any(
        n.lstrip("./").startswith("run/buildkit")
        for layer in layer_names(kiln_root, "app:ssh")
        for n in layer
    )
    # SSH_AUTH_SOCK works as the default, and a required agent that is missing is an error.
    ctx = context(tmp_path, "FROM busybox:base\nRUN --mount=type=ssh,required=true true\n")
    result = build("--ssh", "default", "-t", "app:ssh2", str(ctx),
                   env={"SSH_AUTH_SOCK": str(ssh_agent)})  # fmt: skip
    assert result.exit_code == 0, result.output
    result = build("--no-cache", "-t", "app:nossh", str(ctx))
    assert result.exit_code == 1
    assert "Dockerfile:2: no SSH agent was forwarded for id default" in result.stderr


SECRET = "s3cr3t-Value-9f8e7d"


def test_a_secret_reaches_no_layer_blob_database_log_or_error(
    kiln_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "token.txt").write_text(SECRET + "\n")
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /length\n"
        'RUN --mount=type=secret,id=api,env=API_KEY echo "$API_KEY" | wc -c > /api-length\n'
        "RUN --mount=type=secret,id=token cat /run/secrets/token\n",
    )
    result = build("--secret", f"id=token,src={tmp_path / 'token.txt'}",
                   "--secret", "id=api,env=API_VALUE", "-t", "app:secret", str(ctx),
                   env={"API_VALUE": SECRET + "-api"})  # fmt: skip
    assert result.exit_code == 0, result.output
    rootfs = unpack(kiln_root, "secret", tmp_path)
    assert (rootfs / "length").read_text().strip() == str(len(SECRET) + 1)
    assert (rootfs / "api-length").read_text().strip() == str(len(SECRET) + 5)
    assert SECRET not in result.output and "****" in result.output  # the step printed it
    failing = context(
        tmp_path,
        "FROM busybox:base\nRUN --mount=type=secret,id=token cat /run/secrets/token; exit 3\n",
    )
    result = build("--secret", f"id=token,src={tmp_path / 'token.txt'}", str(failing))
    assert result.exit_code == 1 and "exit code 3: ****" in result.stderr
    assert SECRET not in result.output + result.stderr
    # Every file of the store: blobs, the database, caches, layer snapshots.
    grep = subprocess.run(["grep", "-r", "-l", "-a", SECRET, str(kiln_root)],
                          capture_output=True, text=True)  # fmt: skip
    assert grep.returncode == 1, grep.stdout  # 1: no match anywhere
    assert not list(Path("/dev/shm").glob("kiln-secret-*"))  # the env secret's file is gone


def test_a_context_bind_mount_sees_what_dockerignore_lets_through(
    kiln_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        "RUN --mount=type=bind,target=/src find /src | sort > /seen\n"
        "RUN --mount=type=bind,source=sub,target=/sub,rw "
        "echo changed > /sub/a && cat /sub/a > /written\n",
        {".dockerignore": "secret.env\nsub/*.log\n", "secret.env": "x", "keep.txt": "k"},
    )
    (ctx / "sub").mkdir()
    (ctx / "sub" / "a").write_text("a\n")
    (ctx / "sub" / "b.log").write_text("log")
    monkeypatch.chdir(tmp_path)  # a relative context path must work too
    result = build("-t", "app:bind", "context")
    assert result.exit_code == 0, result.output
    rootfs = unpack(kiln_root, "bind", tmp_path)
    assert (rootfs / "seen").read_text().split() == [
        "/src", "/src/.dockerignore", "/src/Dockerfile", "/src/keep.txt", "/src/sub",
        "/src/sub/a",
    ]  # fmt: skip
    assert (rootfs / "written").read_text() == "changed\n"
    assert (ctx / "sub" / "a").read_text() == "a\n"  # a rw bind's writes are thrown away


def test_a_cache_mount_outlives_the_build_until_pruned(kiln_root: Path, tmp_path: Path) -> None:
    dockerfile = (
        "FROM busybox:base\nARG N\n"
        "RUN --mount=type=cache,target=/cache,id=downloads "
        "if [ -f /cache/artifact ]; then echo reused; else echo fetched > /cache/artifact; "
        "echo fetched; fi; cp /cache/artifact /artifact-$N\n"
    )
    ctx = context(tmp_path, dockerfile)
    first = build("--build-arg", "N=1", "-t", "app:c1", str(ctx))
    second = build("--build-arg", "N=2", "-t", "app:c2", str(ctx))  # a new key: the step runs
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    assert "#2 fetched" in first.output and "#2 reused" in second.output
    assert (kiln_root / "cache-mounts").is_dir()
    pruned = invoke("prune", "--cache-mounts").stdout
    assert "Deleted 1 cache mount(s)" in pruned
    third = build("--build-arg", "N=3", "-t", "app:c3", str(ctx))
    assert third.exit_code == 0 and "#2 fetched" in third.output


def test_bind_mounts_from_a_stage_and_an_image_and_cache_mount_ownership(
    kiln_root: Path, tmp_path: Path
) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base AS builder\nRUN mkdir /out && echo artifact > /out/x\n"
        "FROM busybox:base\n"
        "RUN --mount=type=bind,from=builder,source=/out,target=/in cat /in/x > /from-stage\n"
        "RUN --mount=type=bind,from=busybox:base,source=/etc/passwd,target=/p head -1 /p > /u\n"
        "RUN --mount=type=bind,from=builder,source=/out,target=/w,rw echo changed > /w/x "
        "&& cat /w/x > /rw\n"
        "RUN --mount=type=cache,target=/c,uid=65534,gid=65534,mode=0700,id=owned "
        "stat -c %u:%g:%a /c > /cache-owner\n"
        "COPY --from=builder /out/x /still\n",
    )
    result = build("-t", "app:from", str(ctx))
    assert result.exit_code == 0, result.output
    rootfs = unpack(kiln_root, "from", tmp_path)
    assert (rootfs / "from-stage").read_text() == "artifact\n"
    assert (rootfs / "u").read_text().startswith("root:x:0:0:")
    assert (rootfs / "rw").read_text() == "changed\n"
    assert (rootfs / "still").read_text() == "artifact\n"  # the rw bind's write was thrown away
    assert (rootfs / "cache-owner").read_text() == "65534:65534:700\n"
    for path in ("in", "p", "w", "c"):
        assert not (rootfs / path).exists(), path


def test_relative_mount_targets_are_in_the_working_directory(
    kiln_root: Path, tmp_path: Path
) -> None:
    """uv's documented Dockerfile binds its lock files at relative targets: they land in the
    WORKDIR (as BuildKit has it), and what the step writes beside them stays there."""
    ctx = context(
        tmp_path,
        "FROM busybox:base\nWORKDIR /app\n"
        "RUN --mount=type=bind,source=uv.lock,target=uv.lock "
        "--mount=type=cache,target=.cache --mount=type=tmpfs,target=scratch/tmp "
        "cat uv.lock > /app/seen && touch .cache/hit && mkdir .venv && pwd > .venv/where "
        "&& test -d /app/scratch/tmp && ! test -e /uv.lock\n",
        {"uv.lock": "locked\n"},
    )
    result = build("-t", "app:relative", str(ctx))
    assert result.exit_code == 0, result.output
    rootfs = unpack(kiln_root, "relative", tmp_path)
    assert (rootfs / "app" / "seen").read_text() == "locked\n"
    assert (rootfs / "app" / ".venv" / "where").read_text() == "/app\n"
    assert sorted(p.name for p in (rootfs / "app").iterdir()) == [".venv", "seen"]  # no stubs
    assert not (rootfs / ".venv").exists() and not (rootfs / "uv.lock").exists()


def test_a_mount_on_the_root_is_refused_with_the_line(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nWORKDIR /\nRUN --mount=type=cache,target=. true\n")
    result = build("-t", "app:root-mount", str(ctx))
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith(
        "Dockerfile:3: RUN --mount: invalid mount target '.'"
    ), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sharing", ["shared", "private", "locked"])
def test_cache_mount_sharing_between_steps_running_at_once(
    kiln_root: Path, tmp_path: Path, sharing: str
) -> None:
    # Two stages run at the same time. Each writes its name into the cache and reads it
    # back once both have written (they meet through a --volume): shared, one directory,
    # so both read the same name; private, a directory each. locked: one step waits for the
    # other to finish, so they do not meet, and each reads its own name.
    meet = "" if sharing == "locked" else (
        "touch /sync/{name} && i=0; while [ ! -f /sync/a ] || [ ! -f /sync/b ]; do "
        "sleep 0.1; i=$((i+1)); [ $i -lt 300 ] || exit 9; done && "
    )  # fmt: skip
    step = (
        "RUN --mount=type=cache,target=/c,id=together,sharing={s} "
        "echo {name} > /c/owner && " + meet + "sleep 0.5 && cat /c/owner > /seen\n"
    )
    ctx = context(
        tmp_path,
        "FROM busybox:base AS a\n" + step.format(s=sharing, name="a")
        + "FROM busybox:base AS b\n" + step.format(s=sharing, name="b")
        + "FROM busybox:base\nCOPY --from=a /seen /a\nCOPY --from=b /seen /b\n",
    )  # fmt: skip
    (tmp_path / "sync").mkdir()
    result = build("-v", f"{tmp_path / 'sync'}:/sync", "-t", f"app:{sharing}", str(ctx))
    assert result.exit_code == 0, result.output
    rootfs = unpack(kiln_root, sharing, tmp_path)
    seen = ((rootfs / "a").read_text().strip(), (rootfs / "b").read_text().strip())
    if sharing == "shared":
        assert seen[0] == seen[1]  # both read the one file the later write left
    else:
        assert seen == ("a", "b")
    caches = sorted(p.name for p in (kiln_root / "cache-mounts").iterdir() if p.is_dir())
    assert len(caches) == (2 if sharing == "private" else 1)
