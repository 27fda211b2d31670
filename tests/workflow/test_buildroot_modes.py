"""atomic-reactor's container build modes through kiln's API: the whole workflow inside
kiln's buildroot image on a private dockerd, with a registry on the host's loopback.

Where this machine's engine cannot start ``--privileged`` containers at all (a capability
bounding set without CAP_SYS_RESOURCE: runc says "unable to apply caps"), the privileged
mode gets the closest thing through ``container_options``: every capability the engine has,
no seccomp or AppArmor, every device (and /dev/net/tun, for the default network); kiln
inside then sees read-only cgroups, and the build asks for the chroot isolation.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from kiln.api.workflow import build_image_in_privileged_container, build_image_using_hosts_docker
from tests.buildroot import Privileged, missing_capabilities
from tests.engines import DockerEngine
from tests.registries import Registry
from tests.workflow.support import git_repository, publish_busybox, skopeo_inspect

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("runc") is None or shutil.which("skopeo") is None,
        reason="the buildroot needs root and runc; checks need skopeo (.ci/run installs them)",
    ),
]


def privileges(privileged: Privileged) -> dict[str, Any]:
    """``container_options`` for ``build_image_in_privileged_container``: none where
    --privileged works, else its emulation (see the module's docstring)."""
    if not privileged.emulated:
        return {}
    return {
        "privileged": False, "cap_add": ["ALL"], "cap_drop": missing_capabilities(),
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
        "device_cgroup_rules": ["a *:* rwm"], "devices": ["/dev/net/tun:/dev/net/tun"],
    }  # fmt: skip


def isolation(privileged: Privileged) -> dict[str, Any]:
    """Where --privileged is emulated, the cgroups are read-only and runc cannot run: the
    build asks for the chroot isolation (kiln never chooses it for the user)."""
    return {"isolation": "chroot"} if privileged.emulated else {}


@pytest.fixture
def repo(busybox_rootfs: Path, registry: Registry, tmp_path: Path) -> tuple[Path, str]:
    base = publish_busybox(busybox_rootfs, registry.host, tmp_path)
    path = tmp_path / "app.git"
    commit = git_repository(path, {
        "Dockerfile": f"FROM {base}\nCOPY msg /msg\nRUN echo built > /built\n"
                      "LABEL name=team/app version=1 release=2\nCMD [\"cat\", \"/msg\"]\n",
        "msg": "hello from the buildroot\n",
    })  # fmt: skip
    return path, commit


def test_a_build_in_the_privileged_buildroot_pushes_and_returns_full_results(
    docker_engine: DockerEngine, buildroot_image: str, privileged: Privileged,
    registry: Registry, repo: tuple[Path, str], tmp_path: Path,
) -> None:  # fmt: skip
    path, commit = repo
    lines: list[str] = []
    results = build_image_in_privileged_container(
        buildroot_image, {"provider": "git", "uri": f"file://{path}"}, "team/app:1",
        target_registries=[registry.host], push_buildroot_to=registry.host,
        prepublish_plugins=[{"name": "test_built_image", "args": {"expect_output": "hello"}}],
        postbuild_plugins=[{"name": "tag_by_labels", "args": {"floating": False}}],
        exit_plugins=[{"name": "store_metadata", "args": {"path": "meta.json"}}],
        docker_base_url=docker_engine.host, container_options=privileges(privileged),
        output_dir=tmp_path / "out", output=lines.append, **isolation(privileged),
    )  # fmt: skip
    assert not results.failed, f"{results.error}\n" + "\n".join(lines[-20:])
    assert results.commit == commit
    assert [r.key for r in results.plugins] == [
        "pull_base_image", "build", "test_built_image", "tag_by_labels", "tag_and_push",
        "store_metadata",
    ]  # fmt: skip
    pushed = results.pushed[registry.host]
    names = [p.name for p in pushed]
    assert names[:2] == [f"{registry.host}/team/app:1", f"{registry.host}/team/app:1-2"]
    for image in pushed[:2]:
        assert skopeo_inspect(image.name)["Digest"] == image.digest
    config = skopeo_inspect(names[0], "--config")
    assert config["config"]["Cmd"] == ["cat", "/msg"]  # type: ignore[index]
    # The buildroot itself, committed after the build and pushed for a later look.
    assert names[2].startswith(f"{registry.host}/buildroot-app:")
    assert skopeo_inspect(names[2])["Digest"] == pushed[2].digest
    # store_metadata's relative path landed in output_dir, the container's working dir.
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["image_id"] == results.image_id
    assert any("running buildstep plugin build" in line for line in lines)


def test_a_failed_build_in_the_buildroot_returns_results_too(
    docker_engine: DockerEngine, buildroot_image: str, privileged: Privileged,
    registry: Registry, tmp_path: Path,
) -> None:  # fmt: skip
    source = tmp_path / "src"
    source.mkdir()
    (source / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    results = build_image_in_privileged_container(
        buildroot_image, {"provider": "path", "uri": f"file://{source}"}, "team/broken:1",
        dont_pull_base_image=True, docker_base_url=docker_engine.host,
        container_options=privileges(privileged),
    )  # fmt: skip
    assert results.failed and results.error is not None
    assert "missing.txt" in results.error and "Dockerfile:2" in results.error
    assert (source / "Dockerfile").read_text() == "FROM scratch\nCOPY missing.txt /\n"


def test_a_build_using_the_hosts_docker_leaves_the_image_in_that_engine(
    docker_engine: DockerEngine, buildroot_image: str, registry: Registry,
    repo: tuple[Path, str],
) -> None:  # fmt: skip
    path, commit = repo
    results = build_image_using_hosts_docker(
        buildroot_image, {"provider": "git", "uri": f"file://{path}"}, "team/hosted:1",
        target_registries=[registry.host], docker_base_url=docker_engine.host,
    )  # fmt: skip
    assert not results.failed, results.error
    assert results.commit == commit
    inspected = json.loads(docker_engine.run("image", "inspect", results.image_id))[0]
    assert "team/hosted:1" in inspected["RepoTags"]
    assert docker_engine.run("run", "--rm", results.image_id) == "hello from the buildroot\n"
    pushed = results.pushed[registry.host]
    assert [p.name for p in pushed] == [f"{registry.host}/team/hosted:1"]
    assert skopeo_inspect(pushed[0].name)["Digest"] == pushed[0].digest
