"""kiln build on a real busybox base image: RUN through runc, COPY, layers, kiln run.

Images are checked with umoci (whiteouts and opaque directories applied by a tool nobody
here wrote) and, where a Docker engine is available, with docker load and docker run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from tests.engine.support import NEEDS_RUNC, context, invoke, layer_names, unpack
from tests.engines import DockerEngine
from tests.processes import kiln_command, mounts_under, processes, wait_for_process

pytestmark = NEEDS_RUNC


def test_run_copy_and_metadata(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        'FROM busybox:base\nARG WHO=world\nENV GREETING="hello $WHO"\nWORKDIR /app\n'
        'COPY src/ ./src/\nRUN echo "$GREETING from $(id -u)" > greeting.txt\n'
        'CMD ["cat", "/app/greeting.txt"]\n',
        {"src/main.py": "print('hi')\n", "src/.env": "SECRET=1\n", ".dockerignore": "**/.env\n"},
    )
    invoke("build", "-t", "app:1", "--build-arg", "WHO=kiln", str(ctx))
    rootfs = unpack(kiln_root, "1", tmp_path)
    assert (rootfs / "app" / "greeting.txt").read_text() == "hello kiln from 0\n"
    assert (rootfs / "app" / "src" / "main.py").read_text() == "print('hi')\n"
    assert not (rootfs / "app" / "src" / ".env").exists()
    config = json.loads(invoke("inspect", "app:1").stdout)[0]["Config"]
    assert config["WorkingDir"] == "/app"
    assert "GREETING=hello kiln" in config["Env"]
    assert invoke("run", "--rm", "app:1").stdout == "hello kiln from 0\n"


def test_deletions_become_whiteouts_and_replaced_dirs_opaque(
    kiln_root: Path, tmp_path: Path
) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN mkdir -p /data && echo old > /data/old && echo keep > /keep\n"
        "RUN rm /bin/vi /keep && rm -rf /data && mkdir /data && echo new > /data/new\n",
    )
    invoke("build", "-t", "app:2", str(ctx))
    first, second = layer_names(kiln_root, "app:2")
    assert "data/old" in first
    assert {"bin/.wh.vi", ".wh.keep", "data/.wh..wh..opq", "data/new"} <= set(second)
    assert not any(name.startswith("etc") for name in first + second)  # no mount stubs
    rootfs = unpack(kiln_root, "2", tmp_path)
    assert sorted(os.listdir(rootfs / "data")) == ["new"]
    assert not (rootfs / "bin" / "vi").exists() and not (rootfs / "keep").exists()


def test_directory_copies_into_new_deleted_and_existing_directories(
    kiln_root: Path, tmp_path: Path
) -> None:
    """A directory copied into a directory the step creates is written straight into the
    layer; the result must be what copying through the overlay gives."""
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN mkdir -p /gone /kept && echo old > /gone/old && echo o > /kept/o\n"
        "RUN rm -rf /gone\nCOPY src/ /gone/\nCOPY src/ /kept/\nCOPY src/ /deep/new/dir/\n",
        {"src/a.txt": "a", "src/sub/b.txt": "b"},
    )
    (ctx / "src" / "sub").chmod(0o750)
    os.utime(ctx / "src" / "sub" / "b.txt", (1_000_000_000, 1_000_000_000))
    invoke("build", "-t", "app:copies", str(ctx))
    *_, gone, kept, deep = layer_names(kiln_root, "app:copies")
    assert {"gone", "gone/a.txt", "gone/sub/b.txt"} <= set(
        gone
    )  # the whiteout below hides /gone/old
    assert "kept/.wh..wh..opq" not in kept
    assert {"deep", "deep/new", "deep/new/dir", "deep/new/dir/sub/b.txt"} <= set(deep)
    rootfs = unpack(kiln_root, "copies", tmp_path)
    assert sorted(os.listdir(rootfs / "gone")) == ["a.txt", "sub"]
    assert sorted(os.listdir(rootfs / "kept")) == ["a.txt", "o", "sub"]
    for top in ("gone", "kept", "deep/new/dir"):
        assert (rootfs / top / "sub" / "b.txt").read_text() == "b"
        assert (rootfs / top / "sub").stat().st_mode & 0o777 == 0o750
        assert (rootfs / top / "sub" / "b.txt").stat().st_mtime == 1_000_000_000
    assert (rootfs / "deep" / "new").stat().st_mode & 0o777 == 0o755


def test_an_empty_directory_recreated_under_a_deleted_one_is_kept(
    kiln_root: Path, tmp_path: Path
) -> None:
    """The lower layers are read as overlayfs reads them: the whiteout of /d hides the
    first layer's /d/e, so the recreated empty /d/e belongs to the new layer."""
    ctx = context(
        tmp_path, "FROM busybox:base\nRUN mkdir -p /d/e\nRUN rm -rf /d\nRUN mkdir -p /d/e\n"
    )
    invoke("build", "-t", "app:recreated", str(ctx))
    *_, recreated = layer_names(kiln_root, "app:recreated")
    assert "d/e" in recreated
    assert (unpack(kiln_root, "recreated", tmp_path) / "d" / "e").is_dir()


def test_image_symlinks_never_lead_a_build_out_of_the_image(
    kiln_root: Path, tmp_path: Path
) -> None:
    """A base image whose directories are absolute symlinks to paths that exist on this
    machine: COPY, WORKDIR and RUN write inside the image, where the links point there."""
    host = tmp_path / "host-dir"  # what /app would reach if the link were followed here
    host.mkdir()
    ctx = context(
        tmp_path,
        f"FROM busybox:base\nRUN ln -s {host} /app && ln -s {host} /w\n"
        "COPY f.txt /app/sub/\nCOPY tree/ /app/tree/\nCOPY --chown=nobody tree/ /app/owned/\n"
        "COPY <<EOF /app/inline.txt\ninline\nEOF\nWORKDIR /w/work\nRUN echo ran > here.txt\n",
        {"f.txt": "file", "tree/t.txt": "tree"},
    )
    invoke("build", "-t", "app:scoped", str(ctx))
    assert list(host.iterdir()) == []
    rootfs = unpack(kiln_root, "scoped", tmp_path)
    inside = rootfs / str(host).lstrip("/")
    assert (inside / "sub" / "f.txt").read_text() == "file"
    assert (inside / "tree" / "t.txt").read_text() == "tree"
    assert (inside / "owned" / "t.txt").read_text() == "tree"
    assert (inside / "inline.txt").read_text() == "inline\n"
    assert (inside / "work" / "here.txt").read_text() == "ran\n"


def test_add_host_and_shm_size(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN grep db /etc/hosts > /hosts.txt && "
        "df -k /dev/shm | tail -1 > /shm.txt\n",
    )
    out = tmp_path / "out"
    invoke("build", "--add-host", "db:10.0.0.3", "--shm-size", "16m", "-o",
           f"type=local,dest={out}", str(ctx))  # fmt: skip
    assert (out / "hosts.txt").read_text() == "10.0.0.3\tdb\n"
    assert (out / "shm.txt").read_text().split()[1] == "16384"
    assert not (out / "etc" / "hosts").exists()  # provided to the step, never in a layer
    bad = CliRunner().invoke(cli, ["build", "--shm-size", "lots", str(ctx)])
    assert bad.exit_code == 2 and "expected a size such as 64m" in bad.output


def test_a_failing_run_names_the_line_and_tags_nothing(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo before\nRUN echo oops && exit 3\n")
    result = CliRunner().invoke(cli, ["build", "-t", "app:broken", str(ctx)])
    assert result.exit_code == 1
    assert f"{ctx}/Dockerfile:3: RUN echo oops && exit 3 failed with exit code 3: oops" in (
        result.stderr
    )
    assert "app:broken" not in invoke("images").stdout


def test_a_missing_base_image_is_a_clear_error(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM nowhere:1\nRUN true\n")
    result = CliRunner().invoke(cli, ["build", str(ctx)])
    assert result.exit_code == 1
    assert "Dockerfile:1: base image 'nowhere:1' is not in kiln's store" in result.stderr


@pytest.mark.slow
def test_built_image_runs_in_docker(
    kiln_root: Path, tmp_path: Path, docker_engine: DockerEngine
) -> None:
    ctx = context(
        tmp_path,
        'FROM busybox:base\nRUN echo built by kiln > /msg\nCMD ["cat", "/msg"]\n',
    )
    invoke("build", "-t", "kiln-built:1", str(ctx))
    archive = tmp_path / "built.tar"
    invoke("save", "-o", str(archive), "kiln-built:1")
    docker_engine.run("load", "-i", str(archive))
    assert docker_engine.run("run", "--rm", "--network", "none", "kiln-built:1") == (
        "built by kiln\n"
    )


def test_rebuilds_use_the_cache_exactly(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nCOPY a.txt b.txt /src/\nRUN cat /src/*.txt > /all.txt\n"
        "COPY c.txt /c.txt\n",
        {"a.txt": "a\n", "b.txt": "b\n", "c.txt": "c\n"},
    )

    def build(*extra: str) -> str:
        return invoke("build", "-t", "app:cache", *extra, str(ctx)).stderr  # must succeed

    assert "CACHED" not in build()
    assert build().count("CACHED") == 3
    (ctx / "c.txt").write_text("C\n")  # only the last COPY reads it
    assert build().count("CACHED") == 2
    os.utime(ctx / "a.txt", (0, 0))  # a new mtime is not new content
    assert build().count("CACHED") == 3
    (ctx / "b.txt").write_text("B\n")
    assert build().count("CACHED") == 0  # the first COPY and everything after it
    assert (unpack(kiln_root, "cache", tmp_path) / "all.txt").read_text() == "a\nB\n"
    assert "CACHED" not in build("--no-cache")
    invoke("prune")
    assert "CACHED" not in build()


def test_copy_exclude_and_parents(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nCOPY --exclude=*.log --exclude=tmp app/ /app/\n"
        "COPY --parents src/a/one.txt src/b/two.txt /tree/\n"
        "COPY --parents ./deep/./x/y.txt /pivot/\n",
        {"app/main.sh": "m", "app/debug.log": "l", "app/tmp/t": "t", "app/sub/x.log": "l",
         "app/sub/keep": "k", "src/a/one.txt": "1", "src/b/two.txt": "2",
         "deep/x/y.txt": "y"},
    )  # fmt: skip
    invoke("build", "-t", "app:copyflags", str(ctx))
    rootfs = unpack(kiln_root, "copyflags", tmp_path)
    app = sorted(str(p.relative_to(rootfs / "app")) for p in (rootfs / "app").rglob("*"))
    assert app == ["main.sh", "sub", "sub/keep", "sub/x.log"]  # * does not cross /
    assert (rootfs / "tree" / "src" / "a" / "one.txt").read_text() == "1"
    assert (rootfs / "tree" / "src" / "b" / "two.txt").read_text() == "2"
    assert (rootfs / "pivot" / "x" / "y.txt").read_text() == "y"


def test_independent_stages_run_at_the_same_time(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base AS a\nRUN date +%s > /start && sleep 2 && date +%s > /end\n"
        "FROM busybox:base AS b\nRUN date +%s > /start && sleep 2 && date +%s > /end\n"
        "FROM busybox:base\nCOPY --from=a /start /a.start\nCOPY --from=a /end /a.end\n"
        "COPY --from=b /start /b.start\nCOPY --from=b /end /b.end\n",
    )
    invoke("build", "-t", "app:parallel", str(ctx))
    rootfs = unpack(kiln_root, "parallel", tmp_path)
    times = {n: float((rootfs / n).read_text()) for n in ("a.start", "a.end", "b.start", "b.end")}
    assert times["a.start"] < times["b.end"] and times["b.start"] < times["a.end"]  # overlapped


def test_copy_from_a_stage_a_directory_into_a_new_directory(
    kiln_root: Path, tmp_path: Path
) -> None:
    # A whole-directory copy into a new directory is deferred to the upper dir, but never
    # from a stage or image: their mounts are gone by the time the deferred copy runs.
    ctx = context(
        tmp_path,
        "FROM busybox:base AS tools\nRUN mkdir -p /opt/kiln/bin && echo run > /opt/kiln/bin/t\n"
        "FROM busybox:base\nCOPY --from=tools /opt/kiln /opt/kiln\n"
        "COPY --from=busybox:base /etc /copied/etc\n",
    )
    invoke("build", "-t", "app:fromdir", str(ctx))
    rootfs = unpack(kiln_root, "fromdir", tmp_path)
    assert (rootfs / "opt/kiln/bin/t").read_text() == "run\n"
    assert (rootfs / "copied/etc/passwd").read_text().startswith("root:x:0:0:")


def test_a_failing_stage_fails_the_build_of_parallel_stages(
    kiln_root: Path, tmp_path: Path
) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base AS a\nRUN sleep 1\nRUN echo after\n"
        "FROM busybox:base AS b\nRUN exit 7\n"
        "FROM busybox:base\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n",
    )
    result = CliRunner().invoke(cli, ["build", "-t", "app:parfail", str(ctx)])
    assert result.exit_code == 1
    assert "Dockerfile:5: RUN exit 7 failed with exit code 7" in result.stderr
    assert "app:parfail" not in invoke("images").stdout


def test_a_fully_cached_rebuild_gives_the_same_image(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\nENV X=1\n",
        {"a.txt": "a\n"},
    )

    def image_id() -> str:
        return invoke("build", "-q", "-t", "app:same", str(ctx)).stdout.strip()

    first = image_id()
    assert image_id() == first
    config = json.loads((kiln_root / "blobs" / "sha256" / first[7:]).read_text())
    new_entries = config["history"][1:]
    assert {h["created"] for h in new_entries} == {config["created"]}
    assert {h["comment"] for h in new_entries} == {"buildkit.dockerfile.v0"}
    (ctx / "a.txt").write_text("changed\n")
    assert image_id() != first


def test_copy_link_layers_survive_a_new_base(
    kiln_root: Path, tmp_path: Path, busybox_rootfs: Path
) -> None:
    other = tmp_path / "other-rootfs"
    shutil.copytree(busybox_rootfs, other, symlinks=True)
    (other / "etc" / "other-base").write_text("yes\n")
    invoke("import", str(other), "busybox:other")
    ctx = context(
        tmp_path,
        "ARG BASE=busybox:base\nFROM ${BASE}\nCOPY --link --chown=nobody a.txt /data/a.txt\n"
        "RUN cat /data/a.txt > /b.txt\n",
        {"a.txt": "a\n"},
    )
    first = invoke("build", "-t", "app:link", str(ctx)).stderr
    assert "CACHED" not in first
    second = invoke("build", "-t", "app:link", "--build-arg", "BASE=busybox:other", str(ctx)).stderr
    assert second.count("CACHED") == 1  # the linked COPY; the RUN sees a new base
    rootfs = unpack(kiln_root, "link", tmp_path)
    assert (rootfs / "etc" / "other-base").exists() and (rootfs / "b.txt").read_text() == "a\n"
    assert (rootfs / "data" / "a.txt").stat().st_uid == 65534


def test_run_mounts_cache_bind_tmpfs_and_secret(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        "RUN --mount=type=cache,target=/var/cache/app echo run >> /var/cache/app/log "
        "&& wc -l < /var/cache/app/log > /runs\n"
        "RUN --mount=type=bind,source=data.txt,target=/mnt/data.txt cat /mnt/data.txt > /copied\n"
        "RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs\n"
        "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-size\n",
        {"data.txt": "data\n"},
    )
    secret = tmp_path / "token.txt"
    secret.write_text("hunter2")
    build = ["build", "-t", "app:mounts", "--secret", f"id=token,src={secret}", str(ctx)]
    invoke(*build)
    invoke(*build[:-1], "--no-cache", str(ctx))  # the cache mount keeps what it holds
    rootfs = unpack(kiln_root, "mounts", tmp_path)
    assert (rootfs / "runs").read_text().strip() == "2"
    assert (rootfs / "copied").read_text() == "data\n"
    assert (rootfs / "tmpfs").read_text() == "x\n"
    assert (rootfs / "secret-size").read_text().strip() == "7"  # len("hunter2")
    for path in ("var/cache/app", "mnt", "scratch", "run/secrets", "var/cache"):
        assert not (rootfs / path).exists(), path  # mount points never land in a layer
    blobs = kiln_root / "blobs" / "sha256"
    assert not any(b"hunter2" in blob.read_bytes() for blob in blobs.iterdir())


def test_a_missing_required_secret_is_an_error(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN --mount=type=secret,id=key,required true\n")
    result = CliRunner().invoke(cli, ["build", str(ctx)])
    assert result.exit_code == 1
    assert "Dockerfile:2: secret key is required but was not given" in result.stderr


def test_a_bind_mounted_file_is_part_of_the_cache_key(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN --mount=type=bind,source=data.txt,target=/d cat /d > /out\n",
        {"data.txt": "one\n"},
    )
    invoke("build", "-t", "app:bindkey", str(ctx))
    (ctx / "data.txt").write_text("two\n")
    assert "CACHED" not in invoke("build", "-t", "app:bindkey", str(ctx)).stderr
    assert (unpack(kiln_root, "bindkey", tmp_path) / "out").read_text() == "two\n"


@pytest.mark.parametrize("isolation", ["oci", "chroot"])
def test_sigterm_stops_a_run_step_and_leaves_nothing_behind(
    kiln_root: Path, tmp_path: Path, isolation: str
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN sleep 6017\n")
    build = subprocess.Popen(
        [kiln_command(), "build", "--isolation", isolation,
         "-t", "app:stopped", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KILN_ROOT": str(kiln_root)},
    )  # fmt: skip
    wait_for_process("sleep", "6017")
    build.send_signal(signal.SIGTERM)
    _, err = build.communicate(timeout=60)
    assert build.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated by SIGTERM"
    assert processes("sleep", "6017") == []
    assert mounts_under(kiln_root) == []
    assert "app" not in invoke("images").stdout


def test_a_failing_stage_stops_a_long_run_step_in_another(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base AS slow\nRUN sleep 6018\n"
        "FROM busybox:base AS broken\nRUN sleep 1 && exit 7\n"
        "FROM busybox:base\nCOPY --from=slow /etc/passwd /a\nCOPY --from=broken /etc/passwd /b\n",
    )
    build = subprocess.run(
        [kiln_command(), "build", "-t", "app:broken", str(ctx)],
        capture_output=True, text=True, timeout=120,  # not the 6018 s the slow stage wants
        env={**os.environ, "KILN_ROOT": str(kiln_root)},
    )  # fmt: skip
    assert build.returncode == 1
    assert "Dockerfile:4: RUN sleep 1 && exit 7 failed with exit code 7" in build.stderr
    assert processes("sleep", "6018") == []
    assert mounts_under(kiln_root) == []
