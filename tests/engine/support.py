"""What the build tests share: the kiln CLI in-process, contexts, umoci's view of an image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kiln.cli.main import cli
from tests.processes import program

NEEDS_RUNC = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


def invoke(*args: str) -> Result:
    """``kiln ARGS`` in this process; it must succeed."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return result


def context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    """A build context: the Dockerfile and ``files``."""
    root = tmp_path / "context"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def unpack(kiln_root: Path, tag: str, tmp_path: Path) -> Path:
    """The root filesystem of the store's image tagged ``tag``, as umoci unpacks it."""
    bundle = tmp_path / f"bundle-{tag}"
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{kiln_root}:{tag}", str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle / "rootfs"


def layer_names(kiln_root: Path, name: str) -> list[list[str]]:
    """The paths in each of the image's layers above the base's (a one-layer base)."""
    image = json.loads(invoke("inspect", name).stdout)[0]
    manifest = json.loads((kiln_root / "blobs" / "sha256" / image["Manifest"][7:]).read_text())
    names = []
    for layer in manifest["layers"][1:]:
        with tarfile.open(kiln_root / "blobs" / "sha256" / layer["digest"][7:]) as tar:
            names.append(tar.getnames())
    return names
