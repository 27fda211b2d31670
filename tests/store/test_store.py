"""The embedded store on disk: blobs, images, tags, removal, and its OCI layout view."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from kiln.oci.objects import CONFIG, LAYER, Descriptor, canonical_json, image_manifest
from kiln.reference import Reference
from kiln.store import Store, StoredImage, StoreError


def make_image(store: Store, payload: bytes, *tags: str) -> StoredImage:
    layer = store.put_blob(payload)
    config = canonical_json(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}}
    )
    manifest = image_manifest(
        Descriptor(CONFIG, store.put_blob(config), len(config)),
        [Descriptor(LAYER, layer, len(payload))],
    )
    return store.add_image(manifest, [Reference.parse(t) for t in tags])


def test_a_new_store_is_an_oci_layout(tmp_path: Path) -> None:
    Store(tmp_path / "root")
    assert json.loads((tmp_path / "root" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    assert json.loads((tmp_path / "root" / "index.json").read_text())["manifests"] == []


def test_blobs_are_content_addressed_and_verified(tmp_path: Path) -> None:
    store = Store(tmp_path)
    digest = store.put_blob(b"hello")
    assert store.blob_path(digest).read_bytes() == b"hello"
    with pytest.raises(StoreError, match="does not match"):
        store.put_blob(b"other", expected=digest)
    assert list(store.tmp.iterdir()) == []


def test_a_failed_stream_write_leaves_no_blob(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def broken(out: object) -> None:
        out.write(b"partial")  # type: ignore[attr-defined]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.put_blob_stream(broken)
    assert list(store.blobs.iterdir()) == []
    assert list(store.tmp.iterdir()) == []


def test_tags_resolve_and_appear_in_index_json(tmp_path: Path) -> None:
    store = Store(tmp_path)
    image = make_image(store, b"layer", "app:1", "localhost:5000/app:1")
    assert store.image("app:1").id == image.id
    assert store.image(image.id[7:19]).manifest_digest == image.manifest_digest
    index = json.loads((tmp_path / "index.json").read_text())
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == ["docker.io/library/app:1", "localhost:5000/app:1"]
    with pytest.raises(StoreError, match="no such image: nope"):
        store.image("nope")


def test_an_image_with_missing_blobs_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    missing = Descriptor(LAYER, "sha256:" + "0" * 64, 1)
    config = store.put_blob(b"{}")
    manifest = image_manifest(Descriptor(CONFIG, config, 2), [missing])
    with pytest.raises(StoreError, match="is not stored"):
        store.add_image(manifest, [Reference.parse("broken")])
    assert store.images() == []


def test_rmi_untags_then_deletes_and_keeps_shared_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = make_image(store, b"shared", "one")
    make_image(store, b"shared", "two:latest")  # same layer and config: the same image
    second = make_image(store, b"own", "three")
    assert store.remove("one") == ["Untagged: one:latest"]
    assert store.remove("two") == [
        "Untagged: two:latest",
        f"Deleted: {first.id}",
    ]
    assert not store.has_blob(first.manifest_digest)
    assert store.has_blob(second.layers[0].digest)
    assert [i.id for i in store.images()] == [second.id]


def test_rmi_by_id_of_a_multiply_tagged_image_needs_force(tmp_path: Path) -> None:
    store = Store(tmp_path)
    image = make_image(store, b"x", "a", "b")
    with pytest.raises(StoreError, match="tagged 2 times"):
        store.remove(image.id)
    assert len(store.remove(image.id, force=True)) == 3


def test_prune_removes_untagged_images_and_orphan_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    make_image(store, b"kept", "kept")
    orphan = store.put_blob(b"orphan")
    untagged = make_image(store, b"untagged")
    assert store.prune() == (
        [untagged.id],
        len(b"orphan") + untagged.size + _meta_size(store, untagged),
    )
    assert not store.has_blob(orphan)
    assert [i.tags for i in store.images()] == [("docker.io/library/kept:latest",)]


def _meta_size(store: Store, image: StoredImage) -> int:
    # Pruning frees the manifest and config too; they are gone by now, so compute them.
    return len(canonical_json(image.manifest)) + len(canonical_json(image.config))


def _tag_many(root: str, start: int) -> None:
    store = Store(Path(root))
    for n in range(start, start + 20):
        make_image(store, f"layer-{n}".encode(), f"app:{n}")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_tag_many, args=(str(tmp_path), n * 20)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    store = Store(tmp_path)
    assert len(store.images()) == 80
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index["manifests"]) == 80
