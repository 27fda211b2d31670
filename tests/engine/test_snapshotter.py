"""The copy-based snapshotter gives the same images as overlayfs, where overlay cannot mount."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from kiln.engine import snapshotter
from tests.processes import program

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0, reason="building needs root and runc"
)

DOCKERFILE = (
    "FROM busybox:base\nRUN mkdir -p /data/sub && echo old > /data/sub/old && echo k > /keep\n"
    "RUN rm /bin/vi /keep && rm -rf /data && mkdir /data && echo new > /data/new\n"
    "COPY files/ /files/\nRUN chmod 600 /files/a && ln -s /files/a /link && mkdir /etc/x\n"
    "USER nobody\nRUN echo me > /tmp/me\n"
)


def kiln(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return result.stdout


def tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory) / name
            st = os.lstat(path)
            content = os.readlink(path) if path.is_symlink() else (
                path.read_text(errors="replace") if path.is_file() else ""
            )  # fmt: skip
            found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return found


def build_and_unpack(kind: str, tmp_path: Path, busybox_rootfs: Path) -> Path:
    os.environ["KILN_ROOT"] = str(tmp_path / f"root-{kind}")
    snapshotter._choice = kind  # this process's choice, as the probe would have made it
    kiln("import", str(busybox_rootfs), "busybox:base")
    context = tmp_path / "ctx"
    if not context.exists():
        (context / "files").mkdir(parents=True)
        (context / "files" / "a").write_text("a\n")
        (context / "Dockerfile").write_text(DOCKERFILE)
    kiln("build", "-q", "-t", "snap:1", str(context))
    bundle = tmp_path / f"bundle-{kind}"
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{tmp_path / f'root-{kind}'}:1", str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle / "rootfs"


def test_copy_snapshotter_builds_the_same_filesystem(
    tmp_path: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshotter, "_choice", None)
    monkeypatch.setenv("KILN_ROOT", str(tmp_path))
    overlay_tree = tree(build_and_unpack("overlay", tmp_path, busybox_rootfs))
    copy_tree = tree(build_and_unpack("copy", tmp_path, busybox_rootfs))
    assert copy_tree == overlay_tree
    assert "data/new" in copy_tree and "data/sub" not in copy_tree and "bin/vi" not in copy_tree
    assert copy_tree["tmp/me"][1] == 65534


@pytest.mark.parametrize("kind", ["overlay", "copy"])
def test_a_layer_that_comes_twice_is_merged_at_its_upper_place(
    kind: str, tmp_path: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two steps that make the same change give one layer twice in the chain (overlayfs
    refuses a lower dir listed twice); a step between them that deletes its file must not
    win over the upper copy."""
    monkeypatch.setattr(snapshotter, "_choice", kind)
    monkeypatch.setenv("KILN_ROOT", str(tmp_path / "root"))
    kiln("import", str(busybox_rootfs), "busybox:base")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox:base\nRUN echo a > /f\nRUN rm /f\nRUN echo a > /f\nRUN cat /f > /seen\n"
    )
    kiln("build", "-q", "--build-arg", "SOURCE_DATE_EPOCH=0", "-t", "twice:1", str(context))
    layers = json.loads(kiln("inspect", "twice:1"))[0]["RootFS"]["Layers"]
    assert layers[1] == layers[3] != layers[2]  # the same layer, a deletion between
    bundle = tmp_path / "bundle"
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{tmp_path / 'root'}:1", str(bundle)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (bundle / "rootfs" / "seen").read_text() == "a\n"
