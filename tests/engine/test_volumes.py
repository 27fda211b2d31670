"""Build-time volumes (``kiln build --volume HOST:CONTAINER[:ro|rw]``): host paths that RUN
steps see, bound for each step and never captured in a layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from kiln.engine.executor import Builder, BuildError, BuildRequest, Volume
from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.store import Store, StoredImage
from kiln.store.transfer import import_rootfs
from tests.processes import program

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


@pytest.fixture
def store(tmp_path: Path, busybox_rootfs: Path) -> Iterator[Store]:
    store = Store(tmp_path / "kiln-root")
    import_rootfs(store, busybox_rootfs, Reference.parse("busybox:base"))
    yield store
    store.close()


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """What the host lends the build: a repository definition file and a data directory."""
    root = tmp_path / "host"
    (root / "data").mkdir(parents=True)
    (root / "data" / "input.txt").write_text("from the host\n")
    (root / "extra.repo").write_text("[extra]\nbaseurl=http://repo.example/\n")
    return root


def context(tmp_path: Path, dockerfile: str) -> Path:
    root = tmp_path / "context"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    return root


def build(store: Store, ctx: Path, *volumes: Volume, tag: str = "app:1") -> tuple[StoredImage, str]:
    """The image and the build's output."""
    lines: list[str] = []
    request = BuildRequest(context=ctx, tags=(tag,), volumes=volumes)
    image = Builder(store, lines.append).build(request)
    return image, "\n".join(lines)


def layer_names(store: Store, image: StoredImage) -> set[str]:
    """Every path in the layers this build added (the base layer is busybox's)."""
    names: set[str] = set()
    for layer in image.layers[1:]:
        with tarfile.open(store.blobs / layer.digest.removeprefix("sha256:")) as tar:
            names.update(name.removeprefix("./").rstrip("/") for name in tar.getnames())
    return names


def read(store: Store, image: StoredImage, path: str) -> bytes:
    """A file of the image, from the topmost layer that has it."""
    for layer in reversed(image.layers):
        with tarfile.open(store.blobs / layer.digest.removeprefix("sha256:")) as tar:
            try:
                member = tar.extractfile(path)
            except KeyError:
                continue
            assert member is not None
            return member.read()
    raise AssertionError(f"{path} is not in the image")


def test_a_read_only_volume_feeds_a_run_and_stays_out_of_the_layers(
    store: Store, tmp_path: Path, host: Path
) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        "RUN grep baseurl /etc/extra.repo > /repo-url && wc -l < /srv/data/input.txt > /lines\n",
    )
    image, _ = build(
        store, ctx,
        Volume(host / "extra.repo", "/etc/extra.repo", readonly=True),
        Volume(host / "data", "/srv/data", readonly=True),
    )  # fmt: skip
    assert read(store, image, "repo-url") == b"baseurl=http://repo.example/\n"
    assert read(store, image, "lines").strip() == b"1"
    names = layer_names(store, image)
    assert {"repo-url", "lines"} <= names
    assert not names & {"etc", "etc/extra.repo", "srv", "srv/data", "srv/data/input.txt"}
    bundle = tmp_path / "bundle"  # and as a tool nobody here wrote unpacks it
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{store.root}:1", str(bundle)],
        check=True, capture_output=True,
    )  # fmt: skip
    rootfs = bundle / "rootfs"
    assert (rootfs / "repo-url").exists() and (rootfs / "etc" / "passwd").exists()
    assert not (rootfs / "etc" / "extra.repo").exists() and not (rootfs / "srv").exists()


def test_a_read_write_volume_takes_what_a_run_writes_back_to_the_host(
    store: Store, tmp_path: Path, host: Path
) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN cp /srv/data/input.txt /srv/data/output.txt && touch /built\n",
    )
    image, _ = build(store, ctx, Volume(host / "data", "/srv/data"))
    assert (host / "data" / "output.txt").read_text() == "from the host\n"
    names = layer_names(store, image)
    assert "built" in names and not any(name.startswith("srv") for name in names)


def test_a_read_only_volume_refuses_writes(store: Store, tmp_path: Path, host: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo no > /srv/data/new\n")
    with pytest.raises(BuildError, match=r"Dockerfile:2: RUN .* failed with exit code 1") as err:
        build(store, ctx, Volume(host / "data", "/srv/data", readonly=True))
    assert "Read-only file system" in str(err.value)
    assert not (host / "data" / "new").exists()


def test_bad_volumes_are_refused_before_the_build(store: Store, tmp_path: Path, host: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN touch /ran\n")
    missing = host / "nowhere"
    with pytest.raises(KilnError) as err:
        build(store, ctx, Volume(missing, "/srv/data"))
    assert str(err.value) == f"--volume {missing}:/srv/data: {missing} does not exist"
    with pytest.raises(KilnError, match="srv/data: the container path must be absolute"):
        build(store, ctx, Volume(host / "data", "srv/data"))
    with pytest.raises(KilnError, match="cannot mount over the root filesystem"):
        build(store, ctx, Volume(host / "data", "/srv/.."))
    assert store.images() == [store.image("busybox:base")]  # nothing was built


def test_the_volume_spec_is_part_of_the_run_cache_key(
    store: Store, tmp_path: Path, host: Path
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN cat /srv/*/input.txt > /copy\n")
    data = host / "data"
    volume = Volume(data, "/srv/data", readonly=True)
    assert "CACHED" not in build(store, ctx, volume)[1]
    image, again = build(store, ctx, volume)
    assert again.count("CACHED") == 1
    (data / "input.txt").write_text("changed\n")  # content is not in the key, as with secrets
    assert build(store, ctx, volume)[1].count("CACHED") == 1
    assert read(store, image, "copy") == b"from the host\n"
    shutil.copytree(data, host / "data2")
    for changed in (
        Volume(data, "/srv/other", readonly=True),  # another target
        Volume(data, "/srv/data"),  # read-write
        Volume(host / "data2", "/srv/data", readonly=True),  # another source
    ):
        assert "CACHED" not in build(store, ctx, changed)[1], changed


def test_kiln_build_volume_option(tmp_path: Path, host: Path, busybox_rootfs: Path) -> None:
    root = tmp_path / "cli-root"
    runner = CliRunner(env={"KILN_ROOT": str(root)})
    assert runner.invoke(cli, ["import", str(busybox_rootfs), "busybox:base"]).exit_code == 0
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN cat /etc/extra.repo > /repo && echo out > /srv/data/out\n",
    )
    result = runner.invoke(cli, [
        "build", "-t", "app:cli", "-v", f"{host / 'extra.repo'}:/etc/extra.repo:ro",
        "--volume", f"{host / 'data'}:/srv/data:rw", str(ctx),
    ])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (host / "data" / "out").read_text() == "out\n"
    store = Store(root)
    try:
        image = store.image("app:cli")
        assert read(store, image, "repo").startswith(b"[extra]")
        assert not layer_names(store, image) & {"etc", "etc/extra.repo", "srv", "srv/data"}
    finally:
        store.close()
    for bad in (f"{host}", f"{host}:/srv:rx", ":/srv"):
        refused = runner.invoke(cli, ["build", "-v", bad, str(ctx)])
        assert refused.exit_code == 2 and "expected HOST:CONTAINER[:ro|rw]" in refused.output
    missing = runner.invoke(cli, ["build", "-v", f"{host}/nowhere:/srv", str(ctx)])
    assert missing.exit_code == 1
    assert f"error: --volume {host}/nowhere:/srv: {host}/nowhere does not exist" in missing.stderr
    docker = runner.invoke(cli, ["build", "--backend", "docker", "-v", f"{host}:/h", str(ctx)])
    assert docker.exit_code == 2 and "--volume: not with --backend docker" in docker.output
