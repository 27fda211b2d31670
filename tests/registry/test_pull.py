"""kiln pull, and FROM an image in a registry: digests kept, layers used compressed,
images pushed by docker read as well as kiln's own, indexes resolved by platform."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kiln.oci.objects import INDEX, canonical_json
from kiln.registry import RegistryClient
from tests.engines import DockerEngine
from tests.registries import Registry
from tests.registry.test_push import invoke, kiln_root, skopeo  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


def dockerfile_context(directory: Path, dockerfile: str) -> Path:
    directory.mkdir()
    (directory / "Dockerfile").write_text(dockerfile)
    return directory


def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    root = tmp_path / name
    monkeypatch.setenv("KILN_ROOT", str(root))
    return root


def test_a_pulled_image_keeps_its_digest_and_runs(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = f"{registry.host}/team/app:1"
    pushed = invoke("push", "-q", "app:1", target).output.strip()
    fresh_store(tmp_path, monkeypatch, "elsewhere")
    output = invoke("pull", target).output
    assert output.count("pull complete") == 4
    image = json.loads(invoke("inspect", target).output)[0]
    assert image["Manifest"] == pushed
    assert invoke("run", "--rm", target).output == "hello from kiln\nbuilt\n"
    again = invoke("pull", target).output
    assert "pull complete" not in again and again.count("already exists") == 4


def test_from_an_image_in_a_registry(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = f"{registry.host}/base:1"
    invoke("push", "app:1", base)
    fresh_store(tmp_path, monkeypatch, "builder")
    context = dockerfile_context(
        tmp_path / "derived",
        f'FROM {base}\nRUN cat /hello.txt > /copy.txt\nCMD ["cat", "/copy.txt"]\n',
    )
    invoke("build", "-t", "derived:1", str(context))
    assert invoke("run", "--rm", "derived:1").output == "hello from kiln\n"
    output = invoke("push", "derived:1", f"{registry.host}/derived:1").output
    # the base's layers are linked from the repository they were pulled from
    assert output.count("mounted from another repository") == 3
    assert output.count(": pushed") == 2


def test_a_missing_remote_base_names_the_line_and_the_registry(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
) -> None:
    context = dockerfile_context(
        tmp_path / "missing", f"FROM {registry.host}/nothing:1\nRUN true\n"
    )
    result = invoke("build", str(context), ok=False)
    assert result.exit_code == 1
    assert "Dockerfile:1" in result.output and "not found on" in result.output


def test_an_image_docker_pushed_is_a_base_for_kiln(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    docker_engine: DockerEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive = tmp_path / "app.tar"
    invoke("save", "-o", str(archive), "app:1")
    docker_engine.run("load", "-i", str(archive))
    remote = f"{registry.host}/from-docker:1"
    docker_engine.run("tag", "app:1", remote)
    docker_engine.run("push", remote)
    fresh_store(tmp_path, monkeypatch, "from-docker")
    invoke("pull", remote)
    assert invoke("run", "--rm", remote).output == "hello from kiln\nbuilt\n"


def test_an_index_resolves_to_the_platform_asked_for(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    busybox_rootfs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    amd64 = invoke("push", "-q", "app:1", f"{registry.host}/multi:amd64").output.strip()
    invoke("import", "--platform", "linux/arm64", str(busybox_rootfs), "busybox:arm64")
    arm64 = invoke("push", "-q", "busybox:arm64", f"{registry.host}/multi:arm64").output.strip()
    with RegistryClient(registry.host) as client:
        entries = []
        for digest, arch in ((amd64, "amd64"), (arm64, "arm64")):
            found = client.get_manifest(
                "multi", digest, ["application/vnd.oci.image.manifest.v1+json"]
            )
            platform = {"os": "linux", "architecture": arch}
            entries.append({"mediaType": found.media_type, "digest": digest,
                            "size": len(found.data), "platform": platform})  # fmt: skip
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
        client.put_manifest("multi", "1", canonical_json(index), INDEX)
    fresh_store(tmp_path, monkeypatch, "multi")
    invoke("pull", "--platform", "linux/amd64", f"{registry.host}/multi:1")
    assert json.loads(invoke("inspect", f"{registry.host}/multi:1").output)[0]["Manifest"] == amd64
    invoke("pull", "--platform", "linux/arm64", f"{registry.host}/multi:1")
    assert json.loads(invoke("inspect", f"{registry.host}/multi:1").output)[0]["Manifest"] == arm64
    missing = invoke("pull", "--platform", "linux/s390x", f"{registry.host}/multi:1", ok=False)
    assert "has no image for linux/s390x (it has linux/amd64, linux/arm64)" in missing.output


def test_copy_from_a_remote_image_and_build_push(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoke("push", "app:1", f"{registry.host}/app:1")
    fresh_store(tmp_path, monkeypatch, "copier")
    context = dockerfile_context(
        tmp_path / "copier-context",
        f"FROM scratch\nCOPY --from={registry.host}/app:1 /hello.txt /copied.txt\n",
    )
    target = f"{registry.host}/copied:1"
    output = invoke("build", "--push", "-t", target, "-o", f"type=local,dest={tmp_path / 'out'}",
                    str(context)).output  # fmt: skip
    assert (tmp_path / "out" / "copied.txt").read_text() == "hello from kiln\n"
    assert f"pushed {target}@sha256:" in output
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert len(inspected["Layers"]) == 1
    no_tag = invoke("build", "--push", str(context), ok=False)
    assert no_tag.exit_code == 2 and "--push needs at least one -t" in no_tag.output


def test_a_parent_registry_serves_the_base_images(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """atomic-reactor's parent_registry: FROM names one registry, the pull goes to another."""
    invoke("push", "app:1", f"{registry.host}/team/base:7")
    fresh_store(tmp_path, monkeypatch, "parent")
    context = dockerfile_context(
        tmp_path / "parent-context", "FROM registry.example.com/team/base:7\nRUN true\n"
    )
    invoke("build", "--parent-registry", registry.host, "-t", "child:1", str(context))
    assert invoke("run", "--rm", "child:1").output == "hello from kiln\nbuilt\n"
    tags = json.loads(invoke("inspect", "registry.example.com/team/base:7").output)[0]["RepoTags"]
    assert "registry.example.com/team/base:7" in tags


def test_a_pulled_image_is_pushed_again_in_either_format(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoke("push", "app:1", f"{registry.host}/oci:1")
    fresh_store(tmp_path, monkeypatch, "repusher")
    invoke("pull", f"{registry.host}/oci:1")
    invoke("push", "--format", "docker", f"{registry.host}/oci:1", f"{registry.host}/docker:1")
    oci = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                            f"docker://{registry.host}/oci:1"))  # fmt: skip
    docker = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                               f"docker://{registry.host}/docker:1"))  # fmt: skip
    assert docker["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [layer["digest"] for layer in docker["layers"]] == [
        layer["digest"] for layer in oci["layers"]
    ]  # the same compressed blobs: nothing was recompressed
    assert {layer["mediaType"] for layer in docker["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }


def test_pull_flag_takes_a_newer_base_from_the_registry(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    busybox_rootfs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = f"{registry.host}/moving:latest"
    invoke("push", "app:1", base)
    context = dockerfile_context(
        tmp_path / "moving-context", f"FROM {base}\nRUN ls / > /listing.txt\n"
    )
    invoke("build", "-t", "user:1", str(context))  # pulls the first base
    first = json.loads(invoke("inspect", base).output)[0]["Manifest"]
    invoke("import", str(busybox_rootfs), "plain:1")
    newer = invoke("push", "-q", "plain:1", base).output.strip()  # the tag moves
    invoke("build", "-t", "user:2", str(context))
    assert json.loads(invoke("inspect", base).output)[0]["Manifest"] == first  # store first
    invoke("build", "--pull", "-t", "user:3", str(context))
    assert json.loads(invoke("inspect", base).output)[0]["Manifest"] == newer
    assert "hello.txt" not in invoke("run", "--rm", "user:3", "cat", "/listing.txt").output


def test_from_an_image_by_its_digest(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digest = invoke("push", "-q", "app:1", f"{registry.host}/pinned:1").output.strip()
    fresh_store(tmp_path, monkeypatch, "pinned")
    pinned = f"{registry.host}/pinned@{digest}"
    context = dockerfile_context(tmp_path / "pinned-context", f"FROM {pinned}\nRUN true\n")
    invoke("build", "-t", "on-pinned:1", str(context))
    assert invoke("run", "--rm", "on-pinned:1").output == "hello from kiln\nbuilt\n"
    assert json.loads(invoke("inspect", pinned).output)[0]["Manifest"] == digest


def test_a_pulled_image_is_saved_for_docker_load(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    docker_engine: DockerEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its layers stay compressed in the store; the saved archive still loads and runs."""
    invoke("push", "app:1", f"{registry.host}/saved:1")
    fresh_store(tmp_path, monkeypatch, "saver")
    invoke("pull", f"{registry.host}/saved:1")
    archive = tmp_path / "pulled.tar"
    invoke("save", "-o", str(archive), f"{registry.host}/saved:1")
    docker_engine.run("load", "-i", str(archive))
    output = docker_engine.run("run", "--rm", "--network", "none", f"{registry.host}/saved:1")
    assert output == "hello from kiln\nbuilt\n"


def test_an_image_built_on_a_pulled_base_loads_into_docker(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    docker_engine: DockerEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compressed layers pulled from a registry and uncompressed ones built here, together."""
    invoke("push", "app:1", f"{registry.host}/mixed-base:1")
    fresh_store(tmp_path, monkeypatch, "mixed")
    context = dockerfile_context(
        tmp_path / "mixed-context",
        f"FROM {registry.host}/mixed-base:1\nRUN echo added > /added.txt\n"
        'CMD ["cat", "/hello.txt", "/added.txt"]\n',
    )
    archive = tmp_path / "mixed.tar"
    invoke("build", "-t", "mixed:1", "-o", f"type=docker,dest={archive}", str(context))
    docker_engine.run("load", "-i", str(archive))
    output = docker_engine.run("run", "--rm", "--network", "none", "mixed:1")
    assert output == "hello from kiln\nadded\n"
