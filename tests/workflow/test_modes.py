"""The workflow from its front doors: ``build_image_here``, ``kiln workflow run`` on the
documented example, and ``kiln build --source git+URI#REF``; against real git
repositories and a registry, with skopeo checking what was pushed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from kiln.cli.main import cli
from kiln.store import Store
from kiln.workflow import BuildResults
from tests.engines import DockerEngine
from tests.processes import kiln_command, mounts_under, processes, program, wait_for_process
from tests.registries import Registry
from tests.workflow.support import git_repository, publish_busybox, skopeo_inspect

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0 or shutil.which("skopeo") is None,
    reason="building needs root and runc; checks need skopeo (.ci/run installs them)",
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "workflow"


@pytest.fixture
def kiln_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "kiln-root"
    monkeypatch.setenv("KILN_ROOT", str(root))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return root


@pytest.fixture
def example_repo(tmp_path: Path) -> tuple[Path, str]:
    """The documented example's app, committed to a git repository of its own."""
    files = {p.name: p.read_text() for p in (EXAMPLE / "app").iterdir()}
    repo = tmp_path / "greeter.git"
    return repo, git_repository(repo, files)


def example_description(repo: Path, registry: Registry) -> dict[str, Any]:
    """examples/workflow/build.yaml, pointed at the test's repository and registry."""
    data: dict[str, Any] = yaml.safe_load((EXAMPLE / "build.yaml").read_text())
    data["source"]["uri"] = f"file://{repo}"
    data["target_registries"] = [registry.host]
    data["parent_registry"] = registry.host  # where FROM's busybox is published
    return data


def test_the_documented_example_builds_tests_tags_and_pushes(
    kiln_root: Path, busybox_rootfs: Path, registry: Registry, tmp_path: Path,
    example_repo: tuple[Path, str],
) -> None:  # fmt: skip
    publish_busybox(busybox_rootfs, registry.host, tmp_path)
    repo, commit = example_repo
    (tmp_path / "build.json").write_text(json.dumps(example_description(repo, registry)))
    run = subprocess.run(
        [kiln_command(), "workflow", "run", "build.json",
         "--results", "results.json"],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "KILN_ROOT": str(kiln_root)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = BuildResults.from_json((tmp_path / "results.json").read_text())
    assert results.commit == commit and not results.failed
    tags = ["build", "stable", "1.0-1", "1.0", "latest"]
    pushed = results.pushed[registry.host]
    assert [p.name for p in pushed] == [f"{registry.host}/team/greeter:{t}" for t in tags]
    for image in pushed:
        assert skopeo_inspect(image.name)["Digest"] == image.digest
    labels = skopeo_inspect(pushed[0].name)["Labels"]
    assert isinstance(labels, dict)
    assert labels["vcs-ref"] == commit and labels["vendor"] == "Example Corp"
    assert results.plugin("test_built_image").result["output"] == "hello from kiln\ngreeter 1.0"  # type: ignore[union-attr]
    assert results.dockerfile.startswith(f"FROM {registry.host}/library/busybox@sha256:")
    # store_metadata wrote the same results beside it; remove_built_image left no image.
    metadata = BuildResults.from_json((tmp_path / "build-metadata.json").read_text())
    assert metadata.image_id == results.image_id
    store = Store(kiln_root)
    try:
        assert all(image.id != results.image_id for image in store.images())
    finally:
        store.close()
    assert f"pushed {registry.host}/team/greeter:latest to {registry.host}" in run.stdout


def test_build_image_here_pulls_builds_and_pushes(
    kiln_root: Path, busybox_rootfs: Path, registry: Registry, tmp_path: Path
) -> None:
    from kiln.api.workflow import build_image_here

    base = publish_busybox(busybox_rootfs, registry.host, tmp_path)
    commit = git_repository(tmp_path / "repo", {
        "sub/Dockerfile": f"FROM {base}\nCOPY hello /hello\n", "sub/hello": "hi\n",
    })  # fmt: skip
    lines: list[str] = []
    results = build_image_here(
        {"provider": "git", "uri": f"file://{tmp_path}/repo", "dockerfile_path": "sub/",
         "provider_params": {"git_commit": commit[:10]}},
        "team/app:1", target_registries=[registry.host], output=lines.append,
    )  # fmt: skip
    assert not results.failed, results.error
    assert [r.key for r in results.plugins] == ["pull_base_image", "build", "tag_and_push"]
    assert results.commit == commit
    digest = skopeo_inspect(f"{registry.host}/team/app:1")["Digest"]
    assert results.pushed == {registry.host: [results.pushed[registry.host][0]]}
    assert results.pushed[registry.host][0].digest == digest
    assert "running buildstep plugin build" in lines

    # dont_pull_base_image: no pull; the base must then be in the store already.
    again = build_image_here(
        {"provider": "git", "uri": f"file://{tmp_path}/repo", "dockerfile_path": "sub"},
        "team/app:2", dont_pull_base_image=True,
    )  # fmt: skip
    assert not again.failed and [r.key for r in again.plugins] == ["build"]
    assert again.image_id == results.image_id  # the same source, fully cached


def test_kiln_build_source_git_uri_at_a_ref(
    kiln_root: Path, busybox_rootfs: Path, registry: Registry, tmp_path: Path
) -> None:
    base = publish_busybox(busybox_rootfs, registry.host, tmp_path)
    first = git_repository(tmp_path / "repo", {"Dockerfile": f"FROM {base}\nCOPY v /v\n",
                                               "v": "one\n"})  # fmt: skip
    (tmp_path / "repo" / "v").write_text("two\n")
    subprocess.run(["git", "-C", str(tmp_path / "repo"), "-c", "user.name=t", "-c",
                    "user.email=t@e", "commit", "-qam", "two"], check=True)  # fmt: skip
    name = f"{registry.host}/team/app:first"
    result = CliRunner().invoke(cli, [
        "build", "--source", f"git+file://{tmp_path}/repo#{first}", "-t", name,
        "-t", f"{registry.host}/team/app:also", "--push", "--results", str(tmp_path / "r.json"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = BuildResults.from_json((tmp_path / "r.json").read_text())
    assert results.commit == first
    assert {p.name for p in results.pushed[registry.host]} == {
        name,
        f"{registry.host}/team/app:also",
    }
    config = skopeo_inspect(name, "--config")
    assert config["rootfs"]["diff_ids"][-1]  # type: ignore[index]
    layout = tmp_path / "layout"
    subprocess.run([program("skopeo"), "copy", "--src-tls-verify=false", f"docker://{name}",
                    f"oci:{layout}:app"], check=True, capture_output=True)  # fmt: skip
    subprocess.run([program("umoci"), "unpack", "--image", f"{layout}:app",
                    str(tmp_path / "bundle")], check=True, capture_output=True)  # fmt: skip
    assert (tmp_path / "bundle" / "rootfs" / "v").read_text() == "one\n"  # not the branch head


def test_kiln_build_source_errors_are_one_line(kiln_root: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["build", "--source", f"git+file://{tmp_path}/nothing#main", "-t", "a:1"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: build failed: cannot fetch file://")
    assert len(result.stderr.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["build", "--source", str(tmp_path), "-t", "a:1",
                                      "--volume", "/x:/y", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "CONTEXT, --volume: not with --source" in result.stderr


def test_the_workflow_on_a_docker_engine(
    kiln_root: Path, busybox_rootfs: Path, registry: Registry, tmp_path: Path,
    docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from kiln.api.workflow import build_image_here

    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    base = publish_busybox(busybox_rootfs, registry.host, tmp_path)
    commit = git_repository(tmp_path / "repo", {
        "Dockerfile": f"FROM {base}\nRUN echo a > /a && echo b > /b\nRUN rm /a\n"
                      "LABEL name=team/dapp version=3 release=1\n",
    })  # fmt: skip
    results = build_image_here(
        {"provider": "git", "uri": f"file://{tmp_path}/repo"}, "team/dapp:build",
        target_registries=[registry.host], backend="docker",
        prebuild_plugins=[{"name": "change_from_in_dockerfile"},
                          {"name": "add_labels_in_dockerfile"}],
        prepublish_plugins=[{"name": "squash"}, {"name": "test_built_image",
                             "args": {"command": ["cat", "/b"], "expect_output": "b"}}],
        postbuild_plugins=[{"name": "tag_by_labels", "args": {"floating": False}}],
    )  # fmt: skip
    assert not results.failed, results.error
    assert results.commit == commit
    # pull_base_image came first (build_image_here adds it), through the engine.
    assert [r.key for r in results.plugins][:2] == ["pull_base_image", "change_from_in_dockerfile"]
    squashed = results.plugin("squash").result  # type: ignore[union-attr]
    assert (squashed["layers_before"], squashed["layers_after"]) == (3, 2)
    inspected = json.loads(docker_engine.run("image", "inspect", results.image_id))[0]
    assert len(inspected["RootFS"]["Layers"]) == 2
    assert inspected["Config"]["Labels"]["vcs-ref"] == commit
    assert docker_engine.run("run", "--rm", "--network", "host", results.image_id,
                             "sh", "-c", "test ! -e /a && cat /b") == "b\n"  # fmt: skip
    pushed = results.pushed[registry.host]
    assert [p.name for p in pushed] == [f"{registry.host}/team/dapp:{t}" for t in ("build", "3-1")]
    for image in pushed:
        assert skopeo_inspect(image.name)["Digest"] == image.digest


def test_sigterm_during_a_run_step_cancels_the_workflow_and_runs_the_exit_plugins(
    kiln_root: Path, busybox_rootfs: Path, registry: Registry, tmp_path: Path
) -> None:
    base = publish_busybox(busybox_rootfs, registry.host, tmp_path)
    source = tmp_path / "src"
    source.mkdir()
    (source / "Dockerfile").write_text(f"FROM {base}\nRUN sleep 6019\n")
    (tmp_path / "build.yaml").write_text(
        f"source: {{provider: path, uri: 'file://{source}'}}\n"
        "image: team/slow:1\n"
        "exit_plugins: [{name: store_metadata, args: {path: meta.json}}]\n"
    )
    workflow = subprocess.Popen(
        [kiln_command(), "workflow", "run", "build.yaml"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KILN_ROOT": str(kiln_root)},
    )  # fmt: skip
    wait_for_process("sleep", "6019")
    workflow.send_signal(signal.SIGTERM)
    _, err = workflow.communicate(timeout=60)
    assert workflow.returncode == 1, err
    assert err.strip().splitlines()[-1] == "error: build failed: cancelled by SIGTERM"
    results = BuildResults.from_json((tmp_path / "meta.json").read_text())
    assert results.cancelled and [r.key for r in results.plugins] == ["build", "store_metadata"]
    assert processes("sleep", "6019") == [] and mounts_under(kiln_root) == []
