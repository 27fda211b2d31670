"""``--cache-from``: a build in another store reuses the steps of an image built with
BUILDKIT_INLINE_CACHE=1 and pushed to a registry, as BuildKit's inline cache does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.api import Client
from kiln.cli.main import cli
from tests.engine.support import NEEDS_RUNC, context, invoke, unpack
from tests.registries import Registry
from tests.workflow.support import publish_busybox

pytestmark = NEEDS_RUNC

STEPS = (
    "COPY app.txt /app.txt\n"
    "RUN date +%s%N > /built-at && echo step-ran\nRUN rm /app.txt && echo ran-second\n"
)


@pytest.fixture
def base(busybox_rootfs: Path, registry: Registry, tmp_path: Path) -> str:
    """busybox in the registry: both stores pull the same base, as a CI and a laptop do."""
    return publish_busybox(busybox_rootfs, registry.host, tmp_path)


def use_store(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    monkeypatch.setenv("KILN_ROOT", str(root))
    return root


def test_a_fresh_store_builds_from_the_inline_cache_of_a_pushed_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry, base: str
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    ctx = context(tmp_path, f"FROM {base}\n{STEPS}", {"app.txt": "v1\n"})
    first_root = use_store(monkeypatch, tmp_path / "ci-store")
    remote = f"{registry.host}/team/app:cache"
    invoke("build", "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", remote, "--push", str(ctx))
    first = json.loads(invoke("inspect", remote).stdout)[0]
    built_at = (unpack(first_root, "cache", tmp_path) / "built-at").read_text()

    laptop = use_store(monkeypatch, tmp_path / "laptop-store")
    result = invoke(
        "build", "--progress", "plain", "--cache-from", remote, "-t", "app:laptop", str(ctx)
    )
    assert "step-ran" not in result.output.replace("echo step-ran", "")  # no step ran
    assert result.output.count("CACHED") == 3 and "#4 ran-second" not in result.output
    rebuilt = json.loads(invoke("inspect", "app:laptop").stdout)[0]
    assert rebuilt["RootFS"]["Layers"] == first["RootFS"]["Layers"]
    assert (unpack(laptop, "laptop", tmp_path) / "built-at").read_text() == built_at

    # A changed file: its COPY and every step after it run again.
    (ctx / "app.txt").write_text("v2\n")
    result = invoke("build", "--progress", "plain", "--cache-from", remote, "-t", "app:2", str(ctx))
    assert "CACHED" not in result.output and "#4 ran-second" in result.output


def test_cache_from_an_image_without_an_inline_cache_warns_and_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str
) -> None:
    use_store(monkeypatch, tmp_path / "store")
    ctx = context(tmp_path, f"FROM {base}\n{STEPS}", {"app.txt": "v1\n"})
    invoke("build", "-t", "plain:1", str(ctx))
    result = CliRunner().invoke(
        cli, ["build", "--progress", "plain", "--no-cache", "--cache-from", "plain:1",
              "--cache-from", "nowhere.invalid/x:1", "-t", "app:1", str(ctx)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: --cache-from plain:1: the image carries no inline cache" in result.output
    assert "warning: --cache-from nowhere.invalid/x:1:" in result.output


def test_docker_py_cache_from(tmp_path: Path, base: str) -> None:
    ctx = context(tmp_path, f"FROM {base}\n{STEPS}", {"app.txt": "v1\n"})
    source = Client(root=tmp_path / "source")
    cached, _ = source.images.build(
        path=str(ctx), tag="cached:1", buildargs={"BUILDKIT_INLINE_CACHE": "1"}
    )
    archive = tmp_path / "cached.tar"
    with open(archive, "wb") as out:
        out.writelines(cached.save(named=True))

    target = Client(root=tmp_path / "target")  # gets the image by docker load, not a registry
    with open(archive, "rb") as data:
        target.images.load(data)
    lines: list[str] = []
    image, _ = target.images.build(
        path=str(ctx), tag="app:1", cache_from=["cached:1"], output=lines.append
    )
    assert sum(line.endswith(" CACHED") for line in lines) == 3
    assert image.attrs["RootFS"]["Layers"] == cached.attrs["RootFS"]["Layers"]
