"""Each built-in plugin, in real workflows: kiln's store and builder (runc), a registry
started for the test, real git repositories; images checked with skopeo and umoci."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.reference import Reference
from kiln.store import Store
from kiln.workflow import BuildDescription, BuildResults, BuildWorkflow
from kiln.workflow.engines import NativeEngine
from tests.processes import program
from tests.registries import Registry
from tests.workflow.support import git_repository, publish_busybox, skopeo_inspect

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0 or shutil.which("skopeo") is None,
    reason="building needs root and runc; checks need skopeo (.ci/run installs them)",
)


@pytest.fixture
def base(busybox_rootfs: Path, registry: Registry, tmp_path: Path) -> str:
    """busybox, published in the test's registry."""
    return publish_busybox(busybox_rootfs, registry.host, tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "kiln-root")
    yield opened
    opened.close()


def path_source(
    tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None
) -> dict[str, Any]:
    root = tmp_path / "src"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return {"provider": "path", "uri": f"file://{root}"}


def run(store: Store, source: dict[str, Any], image: str = "example.com/team/app:1",
        **extra: Any) -> BuildResults:  # fmt: skip
    description = BuildDescription.from_dict({"source": source, "image": image, **extra})
    results = BuildWorkflow(description, engine=NativeEngine(store)).run()
    return results


def ok(results: BuildResults) -> BuildResults:
    assert not results.failed, results.error
    return results


def unpack(store: Store, name: str, tmp_path: Path) -> Path:
    tag = "unpack-" + hashlib.sha256(name.encode()).hexdigest()[:8]  # umoci finds it by tag
    bundle = tmp_path / tag
    store.tag(name, Reference.parse(f"unpack/me:{tag}"))
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{store.root}:{tag}", str(bundle)],
        check=True, capture_output=True,
    )  # fmt: skip
    return bundle / "rootfs"


def layer_paths(store: Store, name: str) -> set[str]:
    """Every path any layer of the image holds."""
    from kiln.oci.layer import open_decompressed

    paths: set[str] = set()
    for layer in store.image(name).layers:
        with (
            open_decompressed(store.blob_path(layer.digest)) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            paths.update(member.name.removeprefix("./") for member in tar)
    return paths


def test_pull_base_image_and_change_from_pin_the_build_to_the_pulled_digest(
    store: Store, base: str, tmp_path: Path
) -> None:
    source = path_source(tmp_path, f"FROM {base}\nRUN echo built > /built\n")
    results = ok(run(store, source, prebuild_plugins=[
        {"name": "pull_base_image"}, {"name": "change_from_in_dockerfile"},
    ]))  # fmt: skip
    registry_digest = skopeo_inspect(base)["Digest"]
    pulled = results.plugin("pull_base_image")
    assert pulled is not None and pulled.result["images"][0]["digest"] == registry_digest
    assert results.base_image == base
    assert results.base_image_id == store.image(base).id
    repository = base.rsplit(":", 1)[0]
    assert results.dockerfile.splitlines()[0] == f"FROM {repository}@{registry_digest}"
    assert store.image(results.image_id).layers[0] == store.image(base).layers[0]


def test_pull_base_image_from_a_parent_registry(store: Store, base: str, tmp_path: Path) -> None:
    # The Dockerfile names Docker Hub's busybox; the machine is offline, the parent
    # registry has it, and the build must use that copy.
    registry_host = base.split("/")[0]
    source = path_source(tmp_path, "FROM busybox:1\nRUN echo ok > /ok\n")
    results = ok(run(store, source, parent_registry=registry_host,
                     prebuild_plugins=[{"name": "pull_base_image"}]))  # fmt: skip
    pulled = results.plugin("pull_base_image").result["images"][0]  # type: ignore[union-attr]
    assert pulled["pulled_from"] == f"{registry_host}/library/busybox:1"
    assert store.image("busybox:1").id == pulled["id"] == results.base_image_id


def test_change_from_pins_a_local_base_without_a_pull(
    store: Store, base: str, tmp_path: Path
) -> None:
    NativeEngine(store).pull(base, False, lambda line: None)
    source = path_source(tmp_path, f"FROM {base} AS first\nFROM first\nRUN true\n")
    results = ok(run(store, source, prebuild_plugins=[{"name": "change_from_in_dockerfile"}]))
    digest = store.image(base).manifest_digest
    lines = results.dockerfile.splitlines()
    assert lines[0] == f"FROM {base.rsplit(':', 1)[0]}@{digest} AS first"
    assert lines[1] == "FROM first"  # a stage, not an image: left alone


def test_add_labels_from_configuration_and_from_the_git_source(
    store: Store, base: str, tmp_path: Path
) -> None:
    commit = git_repository(tmp_path / "repo", {"Dockerfile": f"FROM {base}\n"})
    before = time.time()
    results = ok(run(
        store, {"provider": "git", "uri": f"file://{tmp_path}/repo"},
        prebuild_plugins=[{"name": "add_labels_in_dockerfile",
                           "args": {"labels": {"vendor": 'ACME "quoted"', "price": "$5 \\ 1"}}}],
    ))  # fmt: skip
    labels = store.image(results.image_id).config["config"]["Labels"]
    assert labels["vendor"] == 'ACME "quoted"' and labels["price"] == "$5 \\ 1"
    assert labels["vcs-ref"] == commit == results.commit
    assert labels["vcs-url"] == f"file://{tmp_path}/repo" and labels["vcs-type"] == "git"
    assert labels["architecture"] == platform.machine()
    built = time.mktime(time.strptime(labels["build-date"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before - 2 <= built <= time.time() + 2


@pytest.mark.parametrize("ignore_file", [".dockerignore", "Dockerfile.dockerignore"])
def test_add_dockerfile_puts_the_final_dockerfile_in_the_image_and_leaves_the_source(
    store: Store, base: str, tmp_path: Path, ignore_file: str
) -> None:
    # Whichever ignore file applies, it lets in only "a": the plugin's file still goes in.
    source = path_source(tmp_path, f"FROM {base}\nCOPY a /a\n", {"a": "A", ignore_file: "*\n!a\n"})
    listing = sorted(p.name for p in (tmp_path / "src").iterdir())
    results = ok(run(store, source, prebuild_plugins=[
        {"name": "add_labels_in_dockerfile", "args": {"labels": {"x": "y"}, "auto_labels": []}},
        {"name": "add_dockerfile"},
    ]))  # fmt: skip
    rootfs = unpack(store, results.image_id, tmp_path)
    inside = (rootfs / "root/buildinfo/Dockerfile-app-1").read_text()
    assert inside == f'FROM {base}\nCOPY a /a\nLABEL "x"="y"\n'
    assert results.plugin("add_dockerfile").result == {"path": "/root/buildinfo/Dockerfile-app-1"}  # type: ignore[union-attr]
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == listing
    assert (tmp_path / "src" / ignore_file).read_text() == "*\n!a\n"


def test_inject_files_are_seen_by_run_steps_and_absent_from_the_image(
    store: Store, base: str, tmp_path: Path
) -> None:
    host_file = tmp_path / "extra.conf"
    host_file.write_text("from the host\n")
    source = path_source(
        tmp_path, f"FROM {base}\nRUN cat /etc/repos/test.repo /etc/extra.conf > /seen\n"
    )
    results = ok(run(store, source, prebuild_plugins=[{"name": "inject_files", "args": {
        "files": {"/etc/repos/test.repo": "[test]\nbaseurl=http://example/\n"},
        "paths": {"/etc/extra.conf": str(host_file)},
    }}]))  # fmt: skip
    rootfs = unpack(store, results.image_id, tmp_path)
    assert (rootfs / "seen").read_text() == "[test]\nbaseurl=http://example/\nfrom the host\n"
    paths = layer_paths(store, results.image_id)
    assert not {"etc/repos/test.repo", "etc/extra.conf", "etc/repos"} & paths


def test_squash_merges_the_built_layers_into_one_above_the_base(
    store: Store, base: str, tmp_path: Path
) -> None:
    source = path_source(tmp_path, f"FROM {base}\nRUN echo a > /a && echo b > /b\n"
                                   "RUN rm /a\nRUN echo c > /c\n")  # fmt: skip
    results = ok(run(store, source, prepublish_plugins=[{"name": "squash"}]))
    squashed = results.plugin("squash").result  # type: ignore[union-attr]
    assert (squashed["layers_before"], squashed["layers_after"]) == (4, 2)
    assert squashed["image_id"] == results.image_id
    image = store.image(results.image_id)
    assert image.layers[0] == store.image(base).layers[0]
    assert store.image("example.com/team/app:1").id == results.image_id
    rootfs = unpack(store, results.image_id, tmp_path)
    assert not (rootfs / "a").exists() and (rootfs / "b").read_text() == "b\n"
    assert (rootfs / "c").read_text() == "c\n"


def test_assert_labels(store: Store, base: str, tmp_path: Path) -> None:
    source = path_source(tmp_path, f"FROM {base}\nLABEL name=team/app version=1\n")
    results = run(store, source, prepublish_plugins=[{"name": "assert_labels"}],
                  postbuild_plugins=[{"name": "tag_and_push"}])  # fmt: skip
    assert results.failed
    assert (
        results.error == "plugin assert_labels failed: the image lacks required label(s): release"
    )
    assert results.plugin("tag_and_push") is None
    results = ok(run(store, source, prepublish_plugins=[
        {"name": "assert_labels", "args": {"required_labels": ["name", "version"]}}]))  # fmt: skip
    assert results.plugin("assert_labels").result == {  # type: ignore[union-attr]
        "labels": {"name": "team/app", "version": "1"}
    }


def test_test_built_image_passes_or_fails_the_build_before_anything_is_pushed(
    store: Store, base: str, registry: Registry, tmp_path: Path
) -> None:
    source = path_source(tmp_path, f"FROM {base}\nRUN echo hello > /greeting\n")
    image = f"{registry.host}/team/app:1"
    passing = ok(run(store, source, image, prepublish_plugins=[{"name": "test_built_image",
        "args": {"command": ["cat", "/greeting"], "expect_output": "hello"}}]))  # fmt: skip
    assert passing.plugin("test_built_image").result == {"exit_code": 0, "output": "hello"}  # type: ignore[union-attr]
    failing_test = {"name": "test_built_image",
                    "args": {"command": ["sh", "-c", "echo bad; exit 3"]}}  # fmt: skip
    failing = run(store, source, image, postbuild_plugins=[{"name": "tag_and_push"}],
                  prepublish_plugins=[failing_test])  # fmt: skip
    assert failing.failed
    assert (
        failing.error == "plugin test_built_image failed: sh -c echo bad; exit 3 exited with 3: bad"
    )
    tags = subprocess.run(
        [program("skopeo"), "list-tags", "--tls-verify=false", f"docker://{registry.host}/team/app"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert tags.returncode == 1 and "404 (Not Found)" in tags.stderr, tags.stderr  # no push


def test_tags_from_config_and_labels_pushed_to_every_target_registry(
    store: Store, base: str, registry: Registry, tmp_path: Path
) -> None:
    source = path_source(
        tmp_path,
        f"FROM {base}\nLABEL name=team/app version=2.1 release=7\n",
        {"container.yaml": "tags: [stable, '2']\n"},
    )
    results = ok(run(
        store, source, "team/app:build", target_registries=[registry.host],
        postbuild_plugins=[
            {"name": "tag_from_config", "args": {"tags": ["nightly"]}},
            {"name": "tag_by_labels", "args": {"unique_tag": "build-42"}},
            {"name": "tag_and_push"},
        ],
    ))  # fmt: skip
    expected_tags = ["build", "nightly", "stable", "2", "2.1-7", "build-42", "2.1", "latest"]
    assert results.tags == [f"docker.io/team/app:{t}" for t in expected_tags]
    pushed = results.pushed[registry.host]
    assert [p.name for p in pushed] == [f"{registry.host}/team/app:{t}" for t in expected_tags]
    for entry in pushed:
        assert skopeo_inspect(entry.name)["Digest"] == entry.digest
    assert len({p.digest for p in pushed}) == 1
    for tag in expected_tags:
        assert store.image(f"team/app:{tag}").id == results.image_id


def test_tag_and_push_without_targets_pushes_to_the_registry_the_name_names(
    store: Store, base: str, registry: Registry, tmp_path: Path
) -> None:
    image = f"{registry.host}/solo/app:1"
    source = path_source(tmp_path, f"FROM {base}\n")
    results = ok(run(store, source, image, postbuild_plugins=[{"name": "tag_and_push"}]))
    assert results.pushed == {registry.host: [results.pushed[registry.host][0]]}
    assert skopeo_inspect(image)["Digest"] == results.pushed[registry.host][0].digest


@pytest.mark.parametrize("method", ["gzip", "xz", "zstd"])
def test_compress_writes_a_loadable_tarball_with_its_checksums(
    store: Store, base: str, tmp_path: Path, method: str
) -> None:
    source = path_source(tmp_path, f"FROM {base}\nRUN echo x > /x\n")
    compress = {"name": "compress", "args": {"method": method, "directory": str(tmp_path / "out")}}
    results = ok(run(store, source, postbuild_plugins=[compress]))
    tarball = results.plugin("compress").result  # type: ignore[union-attr]
    data = Path(tarball["path"]).read_bytes()
    assert tarball["size"] == len(data)
    assert tarball["sha256sum"] == hashlib.sha256(data).hexdigest()
    assert tarball["md5sum"] == hashlib.md5(data).hexdigest()
    plain = tmp_path / "image.tar"
    decompress = {"gzip": ["gzip", "-dc"], "xz": ["xz", "-dc"], "zstd": ["zstd", "-dcq"]}[method]
    if shutil.which(decompress[0]) is None:
        pytest.skip(f"{decompress[0]} is not installed")
    with open(plain, "wb") as out:
        subprocess.run([*decompress, tarball["path"]], stdout=out, check=True)
    inspected = json.loads(subprocess.run(
        [program("skopeo"), "inspect", f"docker-archive:{plain}"], check=True,
        capture_output=True, text=True,
    ).stdout)  # fmt: skip
    assert inspected["Layers"][-1] and len(inspected["Layers"]) == 2
    if method == "gzip":  # Python's own gzip reads it too
        with tarfile.open(tarball["path"], "r:gz") as tar:
            assert "manifest.json" in tar.getnames()


def test_store_metadata_writes_the_results_even_when_the_build_fails(
    store: Store, base: str, tmp_path: Path
) -> None:
    metadata = tmp_path / "meta" / "results.json"
    source = path_source(tmp_path, f"FROM {base}\nRUN exit 4\n")
    results = run(store, source, exit_plugins=[{"name": "store_metadata",
                                                "args": {"path": str(metadata)}}])  # fmt: skip
    written = BuildResults.from_json(metadata.read_text())
    assert written.failed and written.error == results.error
    assert written.error is not None and "failed with exit code 4" in written.error
    assert written.dockerfile == f"FROM {base}\nRUN exit 4\n"
    assert [r.key for r in written.plugins] == ["build", "store_metadata"]


def test_remove_built_image_leaves_nothing_of_the_image(
    store: Store, base: str, tmp_path: Path
) -> None:
    source = path_source(tmp_path, f"FROM {base}\nLABEL name=n version=1 release=1\n")
    results = ok(run(store, source, postbuild_plugins=[{"name": "tag_by_labels"}],
                     exit_plugins=[{"name": "remove_built_image"}]))  # fmt: skip
    assert results.plugin("remove_built_image").result == {"image_id": results.image_id}  # type: ignore[union-attr]
    assert all(image.id != results.image_id for image in store.images())
    assert not any("n:" in tag for image in store.images() for tag in image.tags)
