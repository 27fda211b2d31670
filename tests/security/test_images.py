"""Crafted registries and archives: digests, manifests, configs and sizes from outside are
checked by one parser before anything touches the store; each bad one is one error line
and leaves the store as it was."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from kiln.registry.client import is_loopback
from tests.security.crafted import CraftedRegistry, crafted_registry
from tests.security.support import Item, kiln, one_error_line, tar_bytes, tree_state

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


@pytest.fixture
def registry() -> Iterator[CraftedRegistry]:
    with crafted_registry() as served:
        yield served


def image(registry: CraftedRegistry, layer: bytes = b"") -> tuple[dict, dict, bytes]:
    """A valid (manifest, config, layer) served under ``evil``, to be spoiled by a test."""
    layer = layer or tar_bytes([Item("hello.txt", data=b"hello")])
    diff_id = registry.serve_blob("evil", layer)
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}  # fmt: skip
    config_digest = registry.serve_blob("evil", json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                   "size": len(json.dumps(config))},
        "layers": [{"mediaType": OCI_LAYER, "digest": diff_id, "size": len(layer)}],
    }  # fmt: skip
    return manifest, config, layer


def pull_fails(store: Path, registry: CraftedRegistry) -> str:
    """The error line of ``kiln pull`` of the served ``evil:1``; the store is unchanged."""
    before = tree_state(store) if store.exists() else {}
    status, output = kiln("pull", f"{registry.host}/evil:1", timeout=60)
    assert status == 1, output
    line = one_error_line(output)
    assert kiln("images", "-q")[1].strip() == ""
    after = {k: v for k, v in tree_state(store).items() if not k.startswith(("tmp", "blobs"))}
    assert {k: v for k, v in before.items() if not k.startswith(("tmp", "blobs"))}.keys() <= (
        after.keys()
    )
    return line


def traversal(target: Path) -> str:
    """A 'digest' of 64 characters that names ``target`` from below the store's dirs."""
    path = "../" * 16 + str(target).lstrip("/")
    while len(path) < 64:
        path = "./" + path if len(path) < 63 else "/" + path
    assert len(path) == 64, path
    return "sha256:" + path


@pytest.fixture
def short_victim() -> Iterator[Path]:
    """A host directory with a short path, so that a traversal fits in 64 characters."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="v") as name:
        victim = Path(name)
        (victim / "secret").write_text("host-secret-6f1d\n")
        yield victim


def test_a_digest_that_is_a_path_never_names_a_host_directory(
    store: Path, tmp_path: Path, registry: CraftedRegistry, short_victim: Path
) -> None:
    """Item 4: ``sha256:../../..`` passed the check (sha256: and 64 characters), and the
    layer's snapshot path became a host directory, an overlay lower dir of the next RUN."""
    before = tree_state(short_victim)
    manifest, config, _ = image(registry)
    manifest["layers"][0]["digest"] = traversal(short_victim)
    registry.serve_manifest("evil", "1", manifest)
    assert "is not a sha256 digest" in pull_fails(store, registry)

    manifest, config, _ = image(registry)  # the same in the config's diff_ids
    config["rootfs"]["diff_ids"] = [traversal(short_victim)]
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {"mediaType": OCI_CONFIG, "size": len(config_bytes),
                          "digest": registry.serve_blob("evil", config_bytes)}  # fmt: skip
    registry.serve_manifest("evil", "1", manifest)
    assert "is not a sha256 digest" in pull_fails(store, registry)
    assert tree_state(short_victim) == before


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda m: m["layers"][0].pop("mediaType"), "has no mediaType"),
        (lambda m: m["layers"][0].update(size="12"), "is not a number of bytes"),
        (lambda m: m["layers"][0].update(size=-1), "is not a number of bytes"),
        (lambda m: m["config"].update(digest="sha256:" + "A" * 64), "is not a sha256 digest"),
        (lambda m: m.update(layers={"a": 1}), "layers are not a list"),
        (lambda m: m.pop("config"), "only schema 2"),
        (lambda m: m["layers"].append("x"), "is not a JSON object"),
    ],
)
def test_malformed_manifests_are_one_error(
    store: Path, registry: CraftedRegistry, spoil: object, message: str
) -> None:
    """Item 16: ``KeyError: 'mediaType'``, a size as a string... were tracebacks."""
    manifest, _, _ = image(registry)
    spoil(manifest)  # type: ignore[operator]
    registry.serve_manifest("evil", "1", manifest)
    assert message in pull_fails(store, registry)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"schemaVersion": 2, "manifests": "x"}'],
)
def test_manifests_that_are_not_objects_are_one_error(
    store: Path, registry: CraftedRegistry, body: bytes
) -> None:
    registry.serve_manifest("evil", "1", body)
    pull_fails(store, registry)


def test_a_config_that_does_not_match_its_layers_is_one_error(
    store: Path, registry: CraftedRegistry
) -> None:
    manifest, config, _ = image(registry)
    config["rootfs"]["diff_ids"] = []
    data = json.dumps(config).encode()
    manifest["config"] = {"mediaType": OCI_CONFIG, "size": len(data),
                          "digest": registry.serve_blob("evil", data)}  # fmt: skip
    registry.serve_manifest("evil", "1", manifest)
    assert "0 diff_ids for 1 layers" in pull_fails(store, registry)


def endless(handler: BaseHTTPRequestHandler) -> None:
    block = b" " * (1 << 20)
    for _ in range(64):
        handler.wfile.write(block)


def test_a_64_mib_manifest_is_not_read_whole(store: Path, registry: CraftedRegistry) -> None:
    """Item 16: a 64 MiB manifest was read whole; containerd's limit is 4 MiB."""
    registry.routes["GET", "/v2/evil/manifests/1"] = (200, {}, endless)
    assert "is larger than 4 MiB" in pull_fails(store, registry)


def test_configs_and_layers_larger_than_they_say_are_refused(
    store: Path, registry: CraftedRegistry
) -> None:
    manifest, _, _ = image(registry)
    manifest["config"]["size"] = 64 << 20
    registry.serve_manifest("evil", "1", manifest)
    assert "config is larger than 4 MiB" in pull_fails(store, registry)

    manifest, _, _ = image(registry)
    digest = manifest["layers"][0]["digest"]
    registry.routes["GET", f"/v2/evil/blobs/{digest}"] = (200, {}, endless)
    registry.serve_manifest("evil", "1", manifest)
    assert "larger than the" in pull_fails(store, registry)
    assert not any((store / "blobs" / "sha256").glob(digest[7:]))


# -- archives ----------------------------------------------------------------------------------


def archive(path: Path, manifest: object, files: dict[str, bytes] | None = None) -> Path:
    items = [Item(name, data=data) for name, data in (files or {}).items()]
    items.append(Item("manifest.json", data=json.dumps(manifest).encode()))
    path.write_bytes(tar_bytes(items))
    return path


@pytest.mark.parametrize(
    ("manifest", "files", "message"),
    [
        ({"Config": "c.json"}, {}, "is not a list"),
        ([{"Layers": []}], {}, "is not a path in the archive"),
        ([{"Config": "c.json", "Layers": []}], {}, "c.json is not in the archive"),
        ([{"Config": "c.json", "Layers": []}], {"c.json": b"{}"}, "no rootfs.diff_ids"),
        ([{"Config": "../../etc/passwd", "Layers": []}], {}, "points outside the archive"),
        (
            [{"Config": "c.json", "Layers": [], "RepoTags": ["Bad Tag!"]}],
            {"c.json": json.dumps({"rootfs": {"diff_ids": []}}).encode()},
            "invalid reference",
        ),
        (
            [{"Config": "c.json", "Layers": ["l.tar"]}],
            {
                "c.json": json.dumps({"rootfs": {"diff_ids": ["sha256:" + "0" * 64]}}).encode(),
                "l.tar": tar_bytes([Item("x")]),
            },
            "its content is not diff_id",
        ),
    ],
)
def test_malformed_load_archives_are_one_error(
    store: Path, tmp_path: Path, manifest: object, files: dict[str, bytes], message: str
) -> None:
    """Item 16: malformed ``load`` archives were tracebacks."""
    status, output = kiln("load", "-i", str(archive(tmp_path / "evil.tar", manifest, files)))
    assert status == 1
    assert message in one_error_line(output)
    assert kiln("images", "-q")[1].strip() == ""


def test_a_layer_named_by_its_digest_must_have_it(store: Path, tmp_path: Path) -> None:
    layer = tar_bytes([Item("x")])
    config = {"rootfs": {"diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}
    status, output = kiln(
        "load", "-i", str(archive(tmp_path / "ok.tar", [{"Config": "c.json", "Layers": ["l"],
                          "RepoTags": ["ok:1"]}], {"c.json": json.dumps(config).encode(),
                                                   "l": layer})),
    )  # fmt: skip
    assert status == 0, output
    assert os.listdir(store / "blobs" / "sha256")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("[::1]:5000", True), ("[::1]", True), ("127.0.0.1:5000", True), ("localhost", True),
        ("[::ffff:10.0.0.1]:5000", False), ("10.0.0.1:5000", False), ("registry.example", False),
        ("[::1", False),
    ],
)  # fmt: skip
def test_loopback_registries_are_recognised(host: str, loopback: bool) -> None:
    """Item 16: ``[::1]:5000`` was not seen as loopback."""
    assert is_loopback(host) is loopback
