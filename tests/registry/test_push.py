"""kiln push to a real registry (Debian's docker-registry), read back by tools nobody here
wrote: skopeo inspect and copy, umoci unpack, and docker pull + run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kiln.cli.main import cli
from tests.engines import DockerEngine
from tests.processes import program
from tests.registries import Registry

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


@pytest.fixture
def kiln_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_rootfs: Path) -> Path:
    root = tmp_path / "kiln-root"
    monkeypatch.setenv("KILN_ROOT", str(root))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    invoke("import", str(busybox_rootfs), "busybox:base")
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox:base\nCOPY hello.txt /hello.txt\nRUN echo built > /built.txt\n"
        'CMD ["cat", "/hello.txt", "/built.txt"]\n'
    )
    (context / "hello.txt").write_text("hello from kiln\n")
    invoke("build", "-q", "-t", "app:1", str(context))
    return root


def invoke(*args: str, input: str | None = None, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def skopeo(*args: str) -> str:
    return subprocess.run(
        [program("skopeo"), *args], check=True, capture_output=True, text=True
    ).stdout


def test_a_pushed_image_is_what_skopeo_and_umoci_read(
    kiln_root: Path, registry: Registry, tmp_path: Path
) -> None:
    target = f"{registry.host}/team/app:1"
    pushed = invoke("push", "-q", "app:1", target).output.strip()
    assert pushed.startswith("sha256:")
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert inspected["Digest"] == pushed
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}"))
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert [layer["mediaType"] for layer in raw["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ] * 3
    config = json.loads(skopeo("inspect", "--config", "--tls-verify=false", f"docker://{target}"))
    assert config["config"]["Cmd"] == ["cat", "/hello.txt", "/built.txt"]
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{layout}:app")
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{layout}:app", str(tmp_path / "bundle")],
        check=True, capture_output=True,
    )  # fmt: skip
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "hello.txt").read_text() == "hello from kiln\n"
    assert (rootfs / "built.txt").read_text() == "built\n"


def test_a_second_push_uploads_and_compresses_nothing(kiln_root: Path, registry: Registry) -> None:
    first = invoke("push", "app:1", f"{registry.host}/app:1").output
    assert first.count("compressing") == 3 and first.count(": pushed") == 4
    again = invoke("push", "app:1", f"{registry.host}/app:2").output
    assert "compressing" not in again and ": pushed" not in again
    assert again.count("already exists") == 4


def test_docker_pulls_and_runs_what_kiln_pushed(
    kiln_root: Path, registry: Registry, docker_engine: DockerEngine
) -> None:
    target = f"{registry.host}/app:docker"
    invoke("push", "--format", "docker", "app:1", target)
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}"))
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    docker_engine.run("pull", target)  # dockerd trusts loopback registries over plain HTTP
    output = docker_engine.run("run", "--rm", "--network", "none", target)
    assert output == "hello from kiln\nbuilt\n"


def test_zstd_and_uncompressed_layers(kiln_root: Path, registry: Registry) -> None:
    for compression, media_type in (
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
        ("uncompressed", "application/vnd.oci.image.layer.v1.tar"),
    ):
        target = f"{registry.host}/app:{compression}"
        invoke("push", "--compression", compression, "app:1", target)
        raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}"))
        assert {layer["mediaType"] for layer in raw["layers"]} == {media_type}
    refused = invoke("push", "--format", "docker", "--compression", "zstd", "app:1",
                     f"{registry.host}/app:bad", ok=False)  # fmt: skip
    assert refused.exit_code == 1 and "cannot be pushed in docker format" in refused.output


def test_basic_auth_login_push_logout(
    kiln_root: Path, basic_auth_registry: Registry, tmp_path: Path
) -> None:
    host = basic_auth_registry.host
    anonymous = invoke("push", "app:1", f"{host}/app:1", ok=False)
    assert anonymous.exit_code == 1 and f"kiln login {host}" in anonymous.output
    wrong = invoke("login", "-u", "kiln", "--password-stdin", host, input="nope\n", ok=False)
    assert wrong.exit_code == 1 and "nope" not in wrong.output
    login = invoke("login", "-u", "kiln", "--password-stdin", host, input="s3cret-pw\n")
    assert "Login Succeeded" in login.output
    saved = json.loads((tmp_path / "docker-config" / "config.json").read_text())
    assert host in saved["auths"]
    pushed = invoke("push", "app:1", f"{host}/app:1").output
    assert "s3cret-pw" not in pushed
    skopeo("inspect", "--tls-verify=false", "--creds", "kiln:s3cret-pw", f"docker://{host}/app:1")
    assert "Removed" in invoke("logout", host).output
    assert host not in json.loads((tmp_path / "docker-config" / "config.json").read_text())["auths"]


def test_pushing_to_nowhere_is_a_clear_error(kiln_root: Path) -> None:
    result = invoke("push", "app:1", "127.0.0.1:9/app:1", ok=False)
    assert result.exit_code == 1
    assert "cannot reach 127.0.0.1:9" in result.output


def test_transfers_report_their_progress(
    kiln_root: Path, registry: Registry, tmp_path: Path
) -> None:
    """The library's progress callback (the CLI draws bars with it): every blob uploaded or
    downloaded ends at its full size."""
    from kiln.reference import Reference
    from kiln.registry import RegistryClient, pull_image, push_image
    from kiln.store import Store

    store = Store(kiln_root)
    sent: dict[str, tuple[int, int]] = {}
    received: dict[str, tuple[int, int]] = {}

    def on_send(digest: str, done: int, total: int) -> None:
        sent[digest] = (done, total)

    def on_receive(digest: str, done: int, total: int) -> None:
        received[digest] = (done, total)

    target = Reference.parse(f"{registry.host}/progress:1")
    with RegistryClient(registry.host) as client:
        push_image(store, "app:1", target, client, progress=on_send)
    assert len(sent) == 4 and all(done == total > 0 for done, total in sent.values())
    with RegistryClient(registry.host) as client:
        pull_image(Store(tmp_path / "other"), target, client, progress=on_receive)
    assert received == sent
