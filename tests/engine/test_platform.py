"""``kiln build --platform``: base images picked for the platform asked (from a registry's
multi-platform index), and RUN steps for a platform this machine cannot run refused with
a way to get an emulator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kiln.oci.objects import INDEX, canonical_json
from kiln.platform import Platform, runs_here
from kiln.registry import RegistryClient
from tests.engine.support import NEEDS_RUNC, context, invoke, unpack
from tests.registries import Registry

pytestmark = NEEDS_RUNC


@pytest.fixture
def kiln_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "kiln-root"
    monkeypatch.setenv("KILN_ROOT", str(root))
    return root


def rootfs_for(busybox_rootfs: Path, tmp_path: Path, arch: str) -> Path:
    """busybox's tree with /arch saying which image this is."""
    root = tmp_path / f"rootfs-{arch}"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    (root / "arch").write_text(arch + "\n")
    return root


def test_platform_picks_the_base_image_from_a_multi_platform_index(
    kiln_root: Path, busybox_rootfs: Path, registry: Registry, tmp_path: Path
) -> None:
    entries = []
    for arch in ("amd64", "arm64"):
        rootfs = rootfs_for(busybox_rootfs, tmp_path, arch)
        invoke("import", "--platform", f"linux/{arch}", str(rootfs), f"base:{arch}")
        digest = invoke("push", "-q", f"base:{arch}", f"{registry.host}/multi:{arch}").stdout
        entries.append((digest.strip(), arch))
    with RegistryClient(registry.host) as client:
        manifests = []
        for digest, arch in entries:
            found = client.get_manifest(
                "multi", digest, ["application/vnd.oci.image.manifest.v1+json"]
            )
            manifests.append({"mediaType": found.media_type, "digest": digest,
                              "size": len(found.data),
                              "platform": {"os": "linux", "architecture": arch}})  # fmt: skip
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        client.put_manifest("multi", "1", canonical_json(index), INDEX)
    ctx = context(tmp_path, f"FROM {registry.host}/multi:1\nCOPY f /f\n", {"f": "f\n"})

    invoke("build", "--platform", "linux/arm64", "-t", "app:arm", str(ctx))
    config = json.loads(invoke("inspect", "app:arm").stdout)[0]
    assert (config["Os"], config["Architecture"]) == ("linux", "arm64")
    assert (unpack(kiln_root, "arm", tmp_path) / "arch").read_text() == "arm64\n"

    # The store now has the arm64 image under that name; a build for this machine fetches
    # the amd64 one instead of using it.
    invoke("build", "-t", "app:native", str(ctx))
    config = json.loads(invoke("inspect", "app:native").stdout)[0]
    assert config["Architecture"] == Platform.host().architecture == "amd64"
    assert (unpack(kiln_root, "native", tmp_path) / "arch").read_text() == "amd64\n"


def test_a_base_image_for_another_platform_that_cannot_be_pulled_is_an_error(
    kiln_root: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    invoke("import", "--platform", "linux/arm64", str(busybox_rootfs), "busybox:arm64")
    ctx = context(tmp_path, "FROM busybox:arm64\nCOPY f /f\n", {"f": "f\n"})
    result = invoke_failing("build", str(ctx))
    assert "Dockerfile:1: base image 'busybox:arm64' is for linux/arm64, not linux/amd64" in (
        result
    )
    assert "kiln pull --platform linux/amd64 busybox:arm64" in result


@pytest.mark.skipif(
    runs_here(Platform("linux", "s390x")), reason="an s390x emulator is registered here"
)
def test_a_run_step_for_a_platform_without_an_emulator_says_how_to_get_one(
    kiln_root: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    invoke("import", "--platform", "linux/s390x", str(busybox_rootfs), "busybox:s390x")
    ctx = context(tmp_path, "FROM busybox:s390x\nCOPY f /f\nRUN cat /f\n", {"f": "f\n"})
    result = invoke_failing("build", "--platform", "linux/s390x", str(ctx))
    assert (
        "Dockerfile:3: RUN for linux/s390x needs an emulator, and none is registered here "
        "(install an emulator: apt-get install qemu-user-static binfmt-support"
    ) in result
    # Without RUN steps there is nothing to emulate: the image is made.
    ctx = context(tmp_path, "FROM busybox:s390x\nCOPY f /f\n", {"f": "f\n"})
    invoke("build", "--platform", "linux/s390x", "-t", "app:s390x", str(ctx))
    assert json.loads(invoke("inspect", "app:s390x").stdout)[0]["Architecture"] == "s390x"


def invoke_failing(*args: str) -> str:
    from click.testing import CliRunner

    from kiln.cli.main import cli

    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 1, result.output
    return " ".join(result.stderr.split())
