"""Client(backend="docker"): the same calls against a private dockerd (Debian's docker.io),
with kiln's own build context, and the same files and config as the native backend."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from kiln.api import BuildError, Client, ImageNotFound
from kiln.api.docker_backend import context_tar
from kiln.reference import Reference
from kiln.store.transfer import import_rootfs
from tests.api.test_client import gzipped_context
from tests.engines import DockerEngine

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)

DOCKERFILE = (
    "FROM busybox:base\nARG WHO=nobody\nENV GREETING=hello\nWORKDIR /app\n"
    'COPY . /app/\nRUN echo $WHO > /app/who.txt\nLABEL tier=web\nCMD ["cat", "/app/who.txt"]\n'
)


@pytest.fixture
def clients(
    tmp_path: Path, busybox_rootfs: Path, docker_engine: DockerEngine
) -> tuple[Client, Client]:
    native = Client(root=tmp_path / "store")
    import_rootfs(native.store, busybox_rootfs, Reference.parse("busybox:base"))  # type: ignore[arg-type]
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(b"".join(native.images.get("busybox:base").save(named=True)))
    docker_engine.run("load", "-i", str(archive))
    return native, Client(backend="docker", base_url=docker_engine.host)


def make_context(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for name, text in {
        "Dockerfile": DOCKERFILE, "keep.txt": "k", "docs/a.md": "a", "docs/private/p.md": "p",
        "build/out.o": "o", ".dockerignore": "build\ndocs\n!docs/*.md\n*.log\n", "x.log": "l",
    }.items():  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def files_of(image_tar: bytes) -> dict[str, bytes]:
    """The /app files of an image saved as a tar (either backend's save())."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(image_tar)) as outer:
        for member in outer.getmembers():
            blob = outer.extractfile(member) if member.isfile() else None
            if blob is None or member.name.endswith(".json") or member.name == "oci-layout":
                continue
            try:
                layer = tarfile.open(fileobj=io.BytesIO(blob.read()))  # noqa: SIM115
            except tarfile.TarError:
                continue
            with layer:
                for entry in layer.getmembers():
                    data = layer.extractfile(entry) if entry.isfile() else None
                    if data is not None and entry.name.startswith("app/"):
                        found[entry.name] = data.read()
    return found


def test_both_backends_build_the_same_image(clients: tuple[Client, Client], tmp_path: Path) -> None:
    native, engine = clients
    context = make_context(tmp_path)
    results = {}
    for name, client in (("native", native), ("docker", engine)):
        image, logs = client.images.build(path=str(context), tag="same:1", buildargs={"WHO": "x"},
                                          labels={"team": "kiln"})  # fmt: skip
        assert any("stream" in entry for entry in logs)
        config = image.attrs["Config"]
        results[name] = (
            files_of(b"".join(image.save())),
            config["Env"], config["WorkingDir"], config["Cmd"], image.labels,
        )  # fmt: skip
    assert results["native"] == results["docker"]
    files = results["native"][0]
    assert "app/docs/a.md" in files and "app/docs/private/p.md" not in files
    assert "app/build/out.o" not in files and "app/x.log" not in files
    assert files["app/who.txt"] == b"x\n"


def test_the_context_tar_is_what_dockerignore_lets_through(tmp_path: Path) -> None:
    with tarfile.open(fileobj=context_tar(make_context(tmp_path))) as tar:
        names = tar.getnames()
    assert names == [".dockerignore", "Dockerfile", "docs", "docs/a.md", "keep.txt"]


def test_a_failed_engine_build_is_a_build_error_with_its_log(
    clients: tuple[Client, Client], tmp_path: Path
) -> None:
    _, engine = clients
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Dockerfile").write_text("FROM busybox:base\nRUN exit 7\n")
    with pytest.raises(BuildError) as failed:
        engine.images.build(path=str(tmp_path / "bad"))
    assert "7" in failed.value.msg and failed.value.build_log
    with pytest.raises(ImageNotFound):
        engine.images.get("never-built:1")


def test_kiln_build_backend_docker(
    clients: tuple[Client, Client],
    tmp_path: Path,
    docker_engine: DockerEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from kiln.cli.main import cli

    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    context = make_context(tmp_path)
    args = ["build", "--backend", "docker", "-q", "-t", "eng:1", "-t", "eng:2"]
    result = CliRunner().invoke(cli, [*args, "--build-arg", "WHO=cli", str(context)])
    assert result.exit_code == 0, result.output
    image_id = result.output.strip().splitlines()[-1]
    assert image_id.startswith("sha256:")
    assert docker_engine.run("run", "--rm", "--network", "none", "eng:2") == "cli\n"
    output = f"type=local,dest={tmp_path / 'o'}"
    refused = CliRunner().invoke(cli, ["build", "--backend", "docker", "-o", output, str(context)])
    assert refused.exit_code == 2 and "--output: not with --backend docker" in refused.output


def test_dockerignore_where_docker_py_and_the_cli_differ(
    clients: tuple[Client, Client], tmp_path: Path, docker_engine: DockerEngine
) -> None:
    """An escaped wildcard (``\\[x].txt``) excludes the file named ``[x].txt`` for the docker
    CLI (Go's filepath.Match); docker-py's own context tar sends it anyway. kiln's tar
    follows the CLI."""
    import docker

    _, engine = clients
    context = tmp_path / "escaped"
    context.mkdir()
    (context / "Dockerfile").write_text('FROM busybox:base\nCOPY . /ctx/\nCMD ["ls", "/ctx"]\n')
    (context / "[x].txt").write_text("excluded")
    (context / "keep.txt").write_text("kept")
    (context / ".dockerignore").write_text("\\[x].txt\n")

    def listing(tag: str) -> list[str]:
        return docker_engine.run("run", "--rm", "--network", "none", tag).split()

    docker_engine.run("build", "-q", "-t", "by-cli:1", str(context))
    engine.images.build(path=str(context), tag="by-kiln:1")
    docker.DockerClient(base_url=docker_engine.host).images.build(
        path=str(context), tag="by-docker-py:1"
    )
    assert "[x].txt" not in listing("by-cli:1")
    assert listing("by-kiln:1") == listing("by-cli:1")
    assert "[x].txt" in listing("by-docker-py:1"), "docker-py now agrees with the CLI here"


def test_every_docker_py_build_keyword_on_the_engine(
    clients: tuple[Client, Client],
    tmp_path: Path,
    docker_engine: DockerEngine,
    registry: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each of docker-py's build() keywords reaches the engine through kiln's Docker backend,
    with an effect checked where the build shows one."""
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(
        '{"proxies": {"default": {"httpProxy": "http://proxy.example:3128"}}}'
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    engine = Client(backend="docker", base_url=docker_engine.host)
    host = registry.host  # type: ignore[attr-defined]
    docker_engine.run("tag", "busybox:base", f"{host}/base:1")
    docker_engine.run("push", f"{host}/base:1")
    context = tmp_path / "all"
    context.mkdir()
    (context / "Other.Dockerfile").write_text(
        f"FROM {host}/base:1 AS first\nARG WHO\n"
        "RUN echo who=$WHO proxy=$HTTP_PROXY && grep db /etc/hosts && df -k /dev/shm\n"
        "FROM first AS second\nRUN exit 9\n"
    )

    def log_of(logs: object) -> str:
        return "".join(str(e.get("stream", "")) for e in logs)  # type: ignore[attr-defined]

    image, logs = engine.images.build(
        path=str(context), dockerfile="Other.Dockerfile", tag="all:1", quiet=False, nocache=True,
        rm=True, forcerm=True, timeout=300, pull=True, buildargs={"WHO": "kw"},
        container_limits={"memory": 512 << 20}, shmsize=32 << 20, labels={"k": "v"},
        cache_from=["busybox:base"], target="first", network_mode="none",
        extra_hosts={"db": "10.0.0.4"}, platform="linux/amd64", isolation="default",
        use_config_proxy=True,
    )  # fmt: skip
    text = log_of(logs)
    assert "who=kw proxy=http://proxy.example:3128" in text
    assert "10.0.0.4" in text and "32768" in text  # the host line, and /dev/shm's 1K-blocks
    assert image.labels == {"k": "v"}
    tar = gzipped_context({"Dockerfile": b"FROM busybox:base\nCOPY f /f\n", "f": b"x"})
    image, logs = engine.images.build(fileobj=tar, custom_context=True, encoding="gzip",
                                      tag="ctx:1", quiet=True)  # fmt: skip
    assert image.tags == ["ctx:1"]
    with pytest.raises(BuildError, match="experimental"):
        engine.images.build(path=str(context), dockerfile="Other.Dockerfile", squash=True)


def test_both_backends_tell_each_line_as_it_comes(
    clients: tuple[Client, Client], tmp_path: Path
) -> None:
    context = make_context(tmp_path)
    for client in clients:
        heard: list[str] = []
        _, logs = client.images.build(path=str(context), nocache=True, output=heard.append)
        streamed = [str(e["stream"]).strip() for e in logs if str(e.get("stream", "")).strip()]
        # the lines heard are the log's, in order; only the closing summary is not told live
        assert heard == streamed[: len(heard)]
        assert all(line.startswith("Successfully") for line in streamed[len(heard) :])
        assert any("RUN" in line for line in heard)
