"""ImageTasker (atomic-reactor's DockerTasker): every method against a private dockerd."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.api import Client
from kiln.api.tasker import DockerTasker, ImageTasker
from kiln.reference import Reference
from kiln.store.transfer import import_rootfs
from tests.engines import DockerEngine
from tests.registries import Registry

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


@pytest.fixture
def tasker(tmp_path: Path, busybox_rootfs: Path, docker_engine: DockerEngine) -> ImageTasker:
    native = Client(root=tmp_path / "store")
    import_rootfs(native.store, busybox_rootfs, Reference.parse("busybox:base"))  # type: ignore[arg-type]
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(b"".join(native.images.get("busybox:base").save(named=True)))
    docker_engine.run("load", "-i", str(archive))
    return DockerTasker(base_url=docker_engine.host)


def write_context(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(f'FROM busybox:base\nCOPY f.txt /f.txt\n{extra}'
                                     'CMD ["cat", "/f.txt"]\n')  # fmt: skip
    (root / "f.txt").write_text("from the tasker\n")
    return root


def test_build_from_path_inspect_tag_and_remove(tasker: ImageTasker, tmp_path: Path) -> None:
    lines = tasker.build_image_from_path(write_context(tmp_path / "ctx"), "tasked:1")
    assert any("Successfully" in line for line in lines)
    assert tasker.image_exists("tasked:1")
    info = tasker.inspect_image(Reference.parse("tasked:1"))
    assert info["Config"]["Cmd"] == ["cat", "/f.txt"]
    assert tasker.get_image_info_by_image_id(info["Id"])["Id"] == info["Id"]  # type: ignore[index]
    assert tasker.tag_image("tasked:1", "tasked:2") == "tasked:2"
    assert len(tasker.get_image_info_by_image_name("tasked:2")) == 1
    assert len(tasker.get_image_info_by_image_name("tasked", exact_tag=False)) == 1
    assert tasker.get_image_info_by_image_name("tasked:3") == []
    tasker.remove_image("tasked:2")
    tasker.remove_image("tasked:1")
    assert not tasker.image_exists("tasked:1")


def test_build_from_git_at_a_commit(tasker: ImageTasker, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_context(repo / "sub")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    first = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    (repo / "sub" / "f.txt").write_text("later\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    copied = tmp_path / "Dockerfile.used"
    tasker.build_image_from_git(f"file://{repo}", "fromgit:1", git_path="sub",
                                git_commit=first, copy_dockerfile_to=str(copied))  # fmt: skip
    container = tasker.run("fromgit:1")
    assert tasker.wait(container) == 0
    assert tasker.logs(container, stream=False) == ["from the tasker"]
    assert copied.read_text().startswith("FROM busybox:base")
    tasker.remove_container(container)


def test_run_wait_logs_commit(tasker: ImageTasker) -> None:
    container = tasker.run(
        "busybox:base", command=["sh", "-c", "echo one; echo two; echo made > /made"],
        create_kwargs={"network_disabled": True},
    )  # fmt: skip
    assert tasker.wait(container) == 0
    assert list(tasker.logs(container, stream=True)) == ["one", "two"]
    image_id = tasker.commit_container(container, "committed:1", message="by the tasker")
    assert tasker.inspect_image(image_id)["Comment"] == "by the tasker"
    tasker.remove_container(container, force=True)
    check = tasker.run("committed:1", command=["cat", "/made"])
    assert tasker.wait(check) == 0 and tasker.logs(check, stream=False) == ["made"]
    tasker.remove_container(check)


def test_push_pull_and_login(
    tasker: ImageTasker, tmp_path: Path, registry: Registry, basic_auth_registry: Registry
) -> None:
    tasker.build_image_from_path(write_context(tmp_path / "ctx"), "pushme:1")
    target = f"{registry.host}/tasker/pushme:1"
    lines = tasker.tag_and_push_image("pushme:1", target)
    assert any("digest" in line for line in lines)
    tasker.remove_image(target)
    assert tasker.pull_image(target) == target and tasker.image_exists(target)
    secret = tmp_path / "secret"
    secret.mkdir()
    auth = base64.b64encode(b"kiln:s3cret-pw").decode()
    (secret / ".dockerconfigjson").write_text(
        json.dumps({"auths": {basic_auth_registry.host: {"auth": auth}}})
    )
    tasker.login(basic_auth_registry.host, str(secret))
    guarded = f"{basic_auth_registry.host}/tasker/pushme:1"
    assert tasker.push_image(tasker.tag_image("pushme:1", guarded))


def test_engine_info_and_version(tasker: ImageTasker) -> None:
    assert "Containers" in tasker.get_info()
    assert "ApiVersion" in tasker.get_version()
