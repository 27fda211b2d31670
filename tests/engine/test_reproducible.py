"""Reproducible builds: with SOURCE_DATE_EPOCH, the same inputs built in two fresh stores, at
two different times, give byte-identical images.

The image is checked with tools kiln did not write: skopeo reads its config, umoci unpacks
its root filesystem; Python's tarfile reads the layer tars.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kiln.cli.main import cli
from tests.processes import program

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)

EPOCH = 1700000000
EPOCH_RFC3339 = "2023-11-14T22:13:20Z"
# The first RUN makes files and directories and changes one of the base's (GNU tar writes that
# layer; overlayfs copies /etc up with xattrs naming the store's inodes), the second deletes
# one (a whiteout: the Python writer's). What they write depends on nothing but the epoch,
# which ARG hands to the step.
DOCKERFILE = """\
FROM busybox:base
ARG SOURCE_DATE_EPOCH
COPY app.txt /app/
RUN echo x > /a && mkdir -p /d/e && date -u -d @${SOURCE_DATE_EPOCH:-0} > /d/e/f && touch /g \
    && echo staff:x:50: >> /etc/group
RUN rm /bin/yes && echo y > /tmp/y
COPY --link app.txt /linked/
WORKDIR /w
"""


def kiln(root: Path, *args: str, epoch_env: int | None = None) -> Result:
    env = {
        "KILN_ROOT": str(root),
        "SOURCE_DATE_EPOCH": None if epoch_env is None else str(epoch_env),
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.stderr or result.output
    return result


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "context"
    root.mkdir()
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / "app.txt").write_text("app\n")
    return root


def store_with_base(tmp_path: Path, name: str, rootfs: Path) -> Path:
    """A fresh store holding the busybox base, imported under the epoch (so that two imports
    of one tree give one image, which the builds on it can then be compared by)."""
    root = tmp_path / name
    kiln(root, "import", str(rootfs), "busybox:base", epoch_env=EPOCH)
    return root


def image(root: Path) -> dict[str, str]:
    found = json.loads(kiln(root, "inspect", "app:repro").stdout)[0]
    return {"id": found["Id"], "manifest": found["Manifest"]}


def layers(root: Path) -> list[tarfile.TarFile]:
    manifest = json.loads(blob(root, image(root)["manifest"]))
    return [tarfile.open(root / "blobs" / "sha256" / d["digest"][7:]) for d in manifest["layers"]]


def blob(root: Path, digest: str) -> bytes:
    return (root / "blobs" / "sha256" / digest[7:]).read_bytes()


def test_two_stores_two_times_one_image(tmp_path: Path, ctx: Path, busybox_rootfs: Path) -> None:
    first = store_with_base(tmp_path, "first", busybox_rootfs)
    second = store_with_base(tmp_path, "second", busybox_rootfs)
    kiln(
        first,
        "build",
        "-q",
        "-t",
        "app:repro",
        "--build-arg",
        f"SOURCE_DATE_EPOCH={EPOCH}",
        str(ctx),
    )
    time.sleep(1.1)  # the second build's clock reads another second
    kiln(
        second, "build", "-q", "-t", "app:repro", str(ctx), epoch_env=EPOCH
    )  # from the environment

    assert image(first) == image(second)
    assert blob(first, image(first)["manifest"]) == blob(second, image(second)["manifest"])

    config = json.loads(
        subprocess.run(
            [program("skopeo"), "inspect", "--config", f"oci:{first}:repro"],
            check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    assert config["created"] == EPOCH_RFC3339
    assert [entry["created"] for entry in config["history"]] == [EPOCH_RFC3339] * 7

    bundle = tmp_path / "bundle"
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{first}:repro", str(bundle)],
        check=True,
        capture_output=True,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "d/e/f").read_text() == "Tue Nov 14 22:13:20 UTC 2023\n"
    assert not (rootfs / "bin/yes").exists()
    newer = [
        str(path.relative_to(rootfs))
        for path in [*rootfs.rglob("*")]
        if os.lstat(path).st_mtime > EPOCH
    ]
    assert newer == []
    paths = ("a", "d", "d/e", "d/e/f", "g", "etc/group", "tmp/y", "w", "app/app.txt", "linked")
    for path in paths:
        assert os.lstat(rootfs / path).st_mtime == EPOCH, path


def test_layers_hold_only_what_the_steps_made(
    tmp_path: Path, ctx: Path, busybox_rootfs: Path
) -> None:
    """No mount stub of the runtime (/proc, /dev, /etc/hosts...) and no time but the epoch's
    in the layers: GNU tar's path (new files) and the Python writer's (a whiteout) alike."""
    root = store_with_base(tmp_path, "store", busybox_rootfs)
    kiln(
        root,
        "build",
        "-q",
        "-t",
        "app:repro",
        "--build-arg",
        f"SOURCE_DATE_EPOCH={EPOCH}",
        str(ctx),
    )
    built = layers(root)[1:]
    assert [tar.getnames() for tar in built] == [
        ["app", "app/app.txt"],
        ["a", "d", "d/e", "d/e/f", "etc", "etc/group", "g"],
        ["bin", "bin/.wh.yes", "tmp", "tmp/y"],
        ["linked", "linked/app.txt"],
        ["w"],
    ]
    for tar in built:
        for member in tar.getmembers():
            assert member.mtime in (EPOCH, 0), member.name  # 0: whiteouts
            assert member.uname == member.gname == ""
            assert not {"atime", "ctime", "mtime"} & set(member.pax_headers), member.name
            assert not [k for k in member.pax_headers if "overlay" in k], member.name


def test_without_the_epoch_two_builds_differ(
    tmp_path: Path, ctx: Path, busybox_rootfs: Path
) -> None:
    """The control: the same inputs without SOURCE_DATE_EPOCH, a second apart, give other
    images (the files' content is the same; their mtimes and the dates are not)."""
    first = store_with_base(tmp_path, "first", busybox_rootfs)
    second = store_with_base(tmp_path, "second", busybox_rootfs)
    kiln(first, "build", "-q", "-t", "app:repro", str(ctx))
    time.sleep(1.1)
    kiln(second, "build", "-q", "-t", "app:repro", str(ctx))
    assert image(first)["id"] != image(second)["id"]
    run_layers = [layers(root)[2] for root in (first, second)]
    for tar in run_layers:
        made = tar.extractfile("d/e/f")
        assert made is not None and made.read() == b"Thu Jan  1 00:00:00 UTC 1970\n"
    assert run_layers[0].getmember("a").mtime != run_layers[1].getmember("a").mtime


def test_a_layer_cached_without_the_epoch_is_not_reused(
    tmp_path: Path, ctx: Path, busybox_rootfs: Path
) -> None:
    """No ARG here: the epoch is in the step's cache key all the same, since it changes
    the layer's mtimes."""
    (ctx / "Dockerfile").write_text("FROM busybox:base\nRUN echo x > /a\n")
    root = store_with_base(tmp_path, "store", busybox_rootfs)
    kiln(root, "build", "-q", "-t", "app:repro", str(ctx))
    arg = f"SOURCE_DATE_EPOCH={EPOCH}"
    kiln(root, "build", "-t", "app:repro", "--build-arg", arg, str(ctx))
    assert layers(root)[1].getmember("a").mtime == EPOCH
    rebuilt = kiln(root, "build", "-t", "app:repro", "--build-arg", arg, str(ctx))
    assert "CACHED" in rebuilt.output  # with the same epoch, the cache serves again
    assert layers(root)[1].getmember("a").mtime == EPOCH


def test_an_epoch_that_is_not_a_number_is_an_error(
    tmp_path: Path, ctx: Path, busybox_rootfs: Path
) -> None:
    root = store_with_base(tmp_path, "store", busybox_rootfs)
    result = CliRunner().invoke(
        cli, ["build", "--build-arg", "SOURCE_DATE_EPOCH=yesterday", str(ctx)],
        env={"KILN_ROOT": str(root)},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "SOURCE_DATE_EPOCH='yesterday' (from --build-arg) is not a whole number" in result.output
