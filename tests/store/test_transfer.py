"""import, save and load, checked by tools nobody here wrote: skopeo, umoci, docker."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from tests.engines import DockerEngine


@pytest.fixture
def kiln_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "kiln-root"
    monkeypatch.setenv("KILN_ROOT", str(root))
    return root


def kiln(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return result.stdout


def tool(*command: str) -> str:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed (scripts/bootstrap installs it)")
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_import_of_a_directory_is_an_image_skopeo_and_umoci_read(
    kiln_root: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    image_id = kiln("import", str(busybox_rootfs), "busybox:kiln").strip()
    assert image_id.startswith("sha256:")
    inspected = json.loads(tool("skopeo", "inspect", f"oci:{kiln_root}:kiln"))
    assert (inspected["Os"], len(inspected["Layers"])) == ("linux", 1)
    config = json.loads(tool("skopeo", "inspect", "--config", f"oci:{kiln_root}:kiln"))
    assert (
        "sha256:" + config["rootfs"]["diff_ids"][0].removeprefix("sha256:")
        == inspected["Layers"][0]
    )
    bundle = tmp_path / "bundle"
    tool("umoci", "unpack", "--image", f"{kiln_root}:kiln", str(bundle))
    rootfs = bundle / "rootfs"
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert (rootfs / "bin" / "busybox").read_bytes() == (
        busybox_rootfs / "bin" / "busybox"
    ).read_bytes()
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777


def test_import_of_a_compressed_tar_keeps_its_entries(
    kiln_root: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "rootfs.tar.gz"
    with gzip.open(archive, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    kiln("import", str(archive), "from-tar")
    bundle = tmp_path / "bundle"
    tool("umoci", "unpack", "--image", f"{kiln_root}:latest", str(bundle))
    assert (bundle / "rootfs" / "etc" / "passwd").read_text().startswith("root:x:0:0:")


def test_import_is_deterministic(kiln_root: Path, busybox_rootfs: Path) -> None:
    first = json.loads(kiln("inspect", kiln("import", str(busybox_rootfs), "a").strip()))
    second = json.loads(kiln("inspect", kiln("import", str(busybox_rootfs), "b").strip()))
    assert first[0]["RootFS"] == second[0]["RootFS"]


@pytest.mark.slow
def test_saved_image_loads_and_runs_in_docker_and_comes_back(
    kiln_root: Path, busybox_rootfs: Path, tmp_path: Path, docker_engine: DockerEngine
) -> None:
    image_id = kiln("import", str(busybox_rootfs), "kiln-busybox:1").strip()
    archive = tmp_path / "image.tar"
    kiln("save", "-o", str(archive), "kiln-busybox:1")
    assert "Loaded image: kiln-busybox:1" in docker_engine.run("load", "-i", str(archive))
    output = docker_engine.run(
        "run", "--rm", "--network", "none", "kiln-busybox:1", "sh", "-c", "echo hello from $0"
    )
    assert output == "hello from sh\n"
    exported = tmp_path / "docker-saved.tar"
    docker_engine.run("save", "-o", str(exported), "kiln-busybox:1")
    kiln("rmi", "kiln-busybox:1")
    assert kiln("images", "-q") == ""
    assert kiln("load", "-i", str(exported)) == "Loaded image: kiln-busybox:1\n"
    assert json.loads(kiln("inspect", "kiln-busybox:1"))[0]["Id"] == image_id


def test_load_refuses_a_layer_that_does_not_match_its_diff_id(
    kiln_root: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    kiln("import", str(busybox_rootfs), "victim")
    archive = tmp_path / "image.tar"
    kiln("save", "-o", str(archive), "victim")
    kiln("rmi", "victim")
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(archive) as source, tarfile.open(tampered, "w") as target:
        for member in source.getmembers():
            content = source.extractfile(member) if member.isfile() else None
            if content is not None and member.size > 100_000:  # the layer
                body = bytearray(content.read())
                body[len(body) // 2] ^= 0xFF
                content = io.BytesIO(bytes(body))
            target.addfile(member, content)
    result = CliRunner().invoke(cli, ["load", "-i", str(tampered)])
    assert result.exit_code == 1
    assert "is not diff_id" in result.stderr
    assert kiln("images", "-q") == ""
