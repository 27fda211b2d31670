"""kiln build --output and --load, checked with skopeo, umoci and a real Docker engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from tests.engines import DockerEngine
from tests.processes import program

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0, reason="building needs root and runc"
)

DOCKERFILE = (
    "FROM busybox:base\nRUN echo made > /made.txt && chmod 0640 /made.txt && rm /bin/vi\n"
    'CMD ["cat", "/made.txt"]\n'
)


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_rootfs: Path) -> Path:
    monkeypatch.setenv("KILN_ROOT", str(tmp_path / "kiln-root"))
    kiln("import", str(busybox_rootfs), "busybox:base")
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    return root


def kiln(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return result.stdout


def test_oci_layout_directory(context: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    kiln("build", "-q", "-t", "out:oci", "-o", f"type=oci,dest={layout}", str(context))
    inspected = json.loads(
        subprocess.run(
            [program("skopeo"), "inspect", f"oci:{layout}:oci"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert len(inspected["Layers"]) == 2
    assert not (layout / "manifest.json").exists()


def test_local_root_filesystem(context: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    kiln("build", "-q", "-o", f"type=local,dest={rootfs}", str(context))
    assert (rootfs / "made.txt").read_text() == "made\n"
    assert (rootfs / "made.txt").stat().st_mode & 0o777 == 0o640
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert not (rootfs / "bin" / "vi").exists()  # the whiteout applied


@pytest.mark.slow
def test_docker_archive_and_load(
    context: Path, tmp_path: Path, docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "image.tar"
    kiln("build", "-q", "-t", "out:archive", "-o", f"type=docker,dest={archive}", str(context))
    docker_engine.run("load", "-i", str(archive))
    assert docker_engine.run("run", "--rm", "--network", "none", "out:archive") == "made\n"
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    result = CliRunner().invoke(cli, ["build", "-t", "out:loaded", "--load", str(context)])
    assert result.exit_code == 0, result.stderr
    assert "Loaded image: out:loaded" in result.stderr
    assert docker_engine.run("run", "--rm", "--network", "none", "out:loaded") == "made\n"


def test_unknown_output_type_fails_before_building(context: Path) -> None:
    result = CliRunner().invoke(cli, ["build", "-o", "type=registry,dest=x", str(context)])
    assert result.exit_code == 1
    assert "unsupported output type 'registry'" in result.stderr
