"""squash: the merged image must unpack, by tools nobody here wrote (umoci, skopeo, docker), to
exactly the tree the original unpacks to, with whiteouts only where the kept layers need them."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kiln.errors import KilnError
from kiln.oci.layer import open_decompressed, write_dir_layer
from kiln.oci.objects import (
    CONFIG,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    LAYER,
    LAYER_GZIP,
    LAYER_ZSTD,
    Descriptor,
    canonical_json,
    image_manifest,
    sha256_digest,
)
from kiln.reference import Reference
from kiln.store import SquashError, Store, StoredImage, StoreError, merge_layers, squash
from kiln.store.transfer import save
from tests.engine import support as engine_support
from tests.engines import DockerEngine
from tests.processes import program

MTIME = 1_700_000_000
CREATED = "2024-05-06T07:08:09Z"

Entry = tuple[tarfile.TarInfo, bytes | None]


def _info(name: str, kind: bytes, mode: int, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def file(name: str, data: bytes = b"", *, mode: int = 0o644, **fields: Any) -> Entry:
    return _info(name, tarfile.REGTYPE, mode, **fields), data


def directory(name: str, *, mode: int = 0o755) -> Entry:
    return _info(name, tarfile.DIRTYPE, mode), None


def symlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hardlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target), None


def whiteout(path: str) -> Entry:
    parent, _, base = path.rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque(path: str) -> Entry:
    return file(f"{path}/.wh..wh..opq")


def layer_tar(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def make_image(
    store: Store, layers: list[bytes], tag: str, compress: dict[int, str] | None = None
) -> StoredImage:
    """An image of these layer tars, a history entry per layer and an empty one after each;
    ``compress`` stores some of them as gzip or zstd blobs, as a registry serves them."""
    descriptors: list[Descriptor] = []
    history: list[dict[str, object]] = []
    for index, raw in enumerate(layers):
        blob, media_type = raw, LAYER
        algorithm = (compress or {}).get(index)
        if algorithm == "gzip":
            blob, media_type = gzip.compress(raw, mtime=0), LAYER_GZIP
        elif algorithm == "zstd":
            blob, media_type = zstandard.ZstdCompressor().compress(raw), LAYER_ZSTD
        descriptors.append(Descriptor(media_type, store.put_blob(blob), len(blob)))
        history.append({"created": CREATED, "created_by": f"RUN step {index}"})
        history.append({"created": CREATED, "created_by": f"ENV N={index}", "empty_layer": True})
    config = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw) for raw in layers]},
            "history": history,
        }
    )
    manifest = image_manifest(Descriptor(CONFIG, store.put_blob(config), len(config)), descriptors)
    return store.add_image(manifest, [Reference.parse(tag)])


def top_layer_names(store: Store, image: StoredImage) -> list[str]:
    with (
        open_decompressed(store.blob_path(image.layers[-1].digest)) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return [member.name for member in tar]


def unpack(store: Store, tag: str, tmp_path: Path) -> Path:
    """umoci's root filesystem of ``tag`` (the store's root is an OCI layout)."""
    if shutil.which("umoci") is None or os.geteuid() != 0:
        pytest.skip("umoci unpack needs umoci and root (.ci/run installs it)")
    return engine_support.unpack(store.root, tag, tmp_path)


def tree(root: Path) -> tuple[dict[str, tuple[object, ...]], list[list[str]]]:
    """Every path's type, mode, owner, mtime, xattrs and content (or link target), and the
    groups of paths that are hard links of one file."""
    paths: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            st = os.lstat(path)
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(relative)
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            xattrs = {
                key: os.getxattr(path, key, follow_symlinks=False)
                for key in os.listxattr(path, follow_symlinks=False)
            }
            paths[relative] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                int(st.st_mtime),
                xattrs,
                content,
            )
    return paths, sorted(sorted(group) for group in inodes.values())


def skopeo_layers(store: Store, tag: str) -> int:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (.ci/run installs it)")
    result = subprocess.run(
        [program("skopeo"), "inspect", f"oci:{store.root}:{tag}"], check=True, capture_output=True
    )
    return len(json.loads(result.stdout)["Layers"])


# Layer 0 is the base image's; layers 1 to 3 delete, replace and recreate what is below.
BASE = [
    directory("etc"),
    file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    file("etc/motd", b"old motd\n"),
    file("etc/old.conf", b"old\n"),
    directory("var"),
    directory("var/cache"),
    file("var/cache/a", b"a"),
    directory("var/cache/sub"),
    file("var/cache/sub/b", b"b"),
    directory("data"),
    file("data/x", b"x is a file\n"),
    directory("lib"),
    file("lib/libc.so", b"\x7fELF"),
    symlink("lib/libc.so.6", "libc.so"),
    directory("opt"),
    directory("opt/app"),
    file("opt/app/1", b"1"),
    file("opt/app/2", b"2"),
    directory("bin"),
    file("bin/sh", b"#!busybox\n", mode=0o755),
    hardlink("bin/ash", "bin/sh"),
]
UPPER = [
    [
        directory("etc"),
        whiteout("etc/old.conf"),
        whiteout("etc/motd"),
        directory("var"),
        directory("var/cache"),
        opaque("var/cache"),
        file("var/cache/new", b"new"),
        directory("data"),
        directory("data/x"),
        file("data/x/inner", b"x is a directory now\n"),
        file("lib", b"lib is a file now\n"),
        directory("tmp", mode=0o1777),
        file("tmp/scratch", b"made and deleted above the base"),
        directory("usr"),
        directory("usr/bin"),
        file("usr/bin/tool", b"tool v1\n", mode=0o755),
        hardlink("usr/bin/tool-alias", "usr/bin/tool"),
        hardlink("usr/bin/a-tool", "usr/bin/tool"),  # sorts before its target
        file(
            "usr/owned",
            b"x",
            mode=0o640,
            uid=1000,
            gid=1001,
            pax_headers={"SCHILY.xattr.user.kiln": "yes"},
        ),
    ],
    [
        directory("etc"),
        file("etc/motd", b"new motd\n"),
        directory("tmp", mode=0o1777),
        whiteout("tmp/scratch"),
        directory("usr"),
        directory("usr/bin"),
        whiteout("usr/bin/tool"),  # its hard links keep its content
        directory("opt"),
        whiteout("opt/app"),
    ],
    [
        directory("opt"),
        directory("opt/app"),
        file("opt/app/3", b"3"),
        directory("usr"),
        directory("usr/bin"),
        file("usr/bin/tool", b"tool v2\n", mode=0o755),
    ],
]


@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "gzip-zstd"])
def test_squash_above_the_base_unpacks_to_the_same_tree(tmp_path: Path, compressed: bool) -> None:
    store = Store(tmp_path / "root")
    layers = [layer_tar(BASE), *(layer_tar(entries) for entries in UPPER)]
    original = make_image(store, layers, "app:orig")
    if compressed:  # as pulled from a registry (umoci 0.4 cannot read zstd: unpack "orig")
        original = make_image(store, layers, "app:pulled", {0: "gzip", 1: "zstd", 2: "gzip"})
    squashed = squash(store, original.manifest_digest, keep=1, tag=Reference.parse("app:squashed"))

    assert squashed.tags == ("docker.io/library/app:squashed",)
    assert squashed.layers[0] == original.layers[0]
    assert skopeo_layers(store, "squashed") == 2
    # Deleted base files keep their whiteouts, emptied base directories their opaque
    # markers; what the squashed layers made and deleted leaves no trace.
    assert top_layer_names(store, squashed) == [
        "data",
        "data/x",
        "data/x/inner",
        "etc",
        "etc/.wh.old.conf",
        "etc/motd",
        "lib",
        "opt",
        "opt/app",
        "opt/app/.wh..wh..opq",
        "opt/app/3",
        "tmp",
        "usr",
        "usr/bin",
        "usr/bin/a-tool",
        "usr/bin/tool",
        "usr/bin/tool-alias",
        "usr/owned",
        "var",
        "var/cache",
        "var/cache/.wh..wh..opq",
        "var/cache/new",
    ]
    expected = tree(unpack(store, "orig", tmp_path))
    assert tree(unpack(store, "squashed", tmp_path)) == expected
    files, links = expected
    assert files["etc/motd"][-1] == b"new motd\n"
    assert files["usr/bin/a-tool"][-1] == b"tool v1\n"
    assert files["usr/owned"][1:6] == (0o640, 1000, 1001, MTIME, {"user.kiln": b"yes"})
    assert "etc/old.conf" not in files and "opt/app/1" not in files
    assert links == [["bin/ash", "bin/sh"], ["usr/bin/a-tool", "usr/bin/tool-alias"]]
    if compressed:  # the merged layer depends only on the layers' content
        assert squashed.id == squash(store, "app:orig", keep=1).id


def test_squash_of_everything_is_one_layer_without_whiteouts(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    layers = [layer_tar(BASE), *(layer_tar(entries) for entries in UPPER)]
    make_image(store, layers, "app:orig", {0: "gzip"})
    squashed = squash(store, "app:orig", keep=0, tag=Reference.parse("app:flat"))

    assert skopeo_layers(store, "flat") == 1
    names = top_layer_names(store, squashed)
    assert not [name for name in names if ".wh." in name]
    assert names[:4] == ["bin", "bin/ash", "bin/sh", "data"]  # parents first, sorted
    assert tree(unpack(store, "flat", tmp_path)) == tree(unpack(store, "orig", tmp_path))


def test_the_config_changes_only_in_rootfs_and_history_as_docker_squash_does(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "root")
    layers = [layer_tar(BASE), *(layer_tar(entries) for entries in UPPER)]
    original = make_image(store, layers, "app:orig")
    squashed = squash(store, original.id, keep=1)

    assert squashed.tags == ()
    config = squashed.config
    assert config["rootfs"]["diff_ids"] == [original.diff_ids[0], squashed.layers[1].digest]
    assert squashed.layers[1].media_type == LAYER
    assert {k: v for k, v in config.items() if k not in ("rootfs", "history")} == {
        k: v for k, v in original.config.items() if k not in ("rootfs", "history")
    }
    # Every entry stays; those of the merged layers are marked empty, and one entry for the
    # merged layer follows them.
    history = config["history"]
    assert history[:2] == original.config["history"][:2]
    assert [entry.get("empty_layer", False) for entry in history] == [False] + [True] * 7 + [False]
    assert [entry["created_by"] for entry in history[:8]] == [
        entry["created_by"] for entry in original.config["history"]
    ]
    assert history[-1] == {
        "comment": f"merge layers 2 to 4 of {original.id}",
        "created": CREATED,
    }
    # Nothing in it depends on when it ran: the same squash is the same image.
    again = squash(store, "app:orig", keep=1, tag=Reference.parse("app:again"))
    assert again.id == squashed.id


def test_a_docker_manifest_gets_a_docker_layer(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    original = make_image(store, [layer_tar([file(n, n.encode())]) for n in "abc"], "app:oci")
    manifest = {**original.manifest, "mediaType": DOCKER_MANIFEST}
    manifest["config"] = {**manifest["config"], "mediaType": DOCKER_CONFIG}
    manifest["layers"] = [{**layer, "mediaType": DOCKER_LAYER} for layer in manifest["layers"]]
    store.add_image(manifest, [Reference.parse("app:docker")])
    squashed = squash(store, "app:docker", keep=1, tag=Reference.parse("app:squashed"))

    assert squashed.manifest["mediaType"] == DOCKER_MANIFEST
    assert squashed.manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert [layer.media_type for layer in squashed.layers] == [DOCKER_LAYER, DOCKER_LAYER]
    assert top_layer_names(store, squashed) == ["b", "c"]


def test_hard_links_are_materialised_when_their_target_is_replaced_or_sorts_later(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "root")
    layers = [
        layer_tar(
            [
                file("z-target", b"shared"),
                hardlink("a-link", "z-target"),
                file("f", b"old f"),
                hardlink("g", "f"),
                hardlink("h", "g"),  # a link to a link
            ]
        ),
        layer_tar([file("f", b"new f")]),
    ]
    make_image(store, layers, "links:orig")
    squashed = squash(store, "links:orig", tag=Reference.parse("links:squashed"))

    with tarfile.open(store.blob_path(squashed.layers[0].digest)) as tar:
        members = {member.name: member for member in tar}
        assert members["a-link"].isreg() and tar.extractfile("a-link").read() == b"shared"  # type: ignore[union-attr]
        assert members["z-target"].linkname == "a-link"
        assert members["g"].isreg() and tar.extractfile("g").read() == b"old f"  # type: ignore[union-attr]
        assert (members["h"].linkname, members["f"].isreg()) == ("g", True)
    files, links = tree(unpack(store, "squashed", tmp_path))
    assert tree(unpack(store, "orig", tmp_path)) == (files, links)
    assert links == [["a-link", "z-target"], ["g", "h"]]


def test_a_directory_deleted_then_filled_without_its_own_entry_gets_an_opaque_marker(
    tmp_path: Path,
) -> None:
    """Some tools leave directory entries out: a whiteout beside entries below the same path
    must become an opaque marker, or the later entries would land in a deleted directory."""
    store = Store(tmp_path / "root")
    layers = [
        layer_tar([directory("p"), file("p/a", b"a")]),
        layer_tar([whiteout("p")]),
        layer_tar([file("p/b", b"b")]),
    ]
    make_image(store, layers, "implicit:orig")
    squashed = squash(store, "implicit:orig", keep=1, tag=Reference.parse("implicit:squashed"))

    assert top_layer_names(store, squashed) == ["p/.wh..wh..opq", "p/b"]
    files, _ = tree(unpack(store, "squashed", tmp_path))
    original, _ = tree(unpack(store, "orig", tmp_path))
    assert sorted(files) == sorted(original) == ["p", "p/b"]
    assert files["p/b"] == original["p/b"]  # p has no entry of its own: its mtime is umoci's


def test_sparse_files_and_real_directories_keep_their_content(tmp_path: Path) -> None:
    """Layers as GNU tar writes them from real directories, a sparse file among them."""
    store = Store(tmp_path / "root")
    base, upper = tmp_path / "base", tmp_path / "upper"
    (base / "srv").mkdir(parents=True)
    (base / "srv" / "keep.txt").write_text("kept\n")
    (upper / "srv").mkdir(parents=True)
    with open(upper / "srv" / "sparse.img", "wb") as sparse:
        sparse.seek(8 << 20)
        sparse.write(b"end")
    os.link(upper / "srv" / "sparse.img", upper / "srv" / "sparse-link.img")
    (upper / "srv" / "run.sh").write_text("#!/bin/sh\n")
    (upper / "srv" / "run.sh").chmod(0o750)
    sparse_tar = subprocess.run(
        ["tar", "--create", "--file=-", "--sparse", "--format=pax", "--sort=name",
         f"--directory={upper}", "srv"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    dir_tar = io.BytesIO()
    write_dir_layer(base, dir_tar)
    make_image(store, [dir_tar.getvalue(), sparse_tar, sparse_tar], "sparse:orig")
    squash(store, "sparse:orig", tag=Reference.parse("sparse:squashed"))

    files, links = tree(unpack(store, "squashed", tmp_path))
    assert (files, links) == tree(unpack(store, "orig", tmp_path))
    assert files["srv/sparse.img"][-1] == bytes(8 << 20) + b"end"
    assert links == [["srv/sparse-link.img", "srv/sparse.img"]]


def test_nothing_to_squash_returns_the_image_itself(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    one = make_image(store, [layer_tar([file("a", b"a")])], "one:1")
    assert squash(store, "one:1") == one
    three = make_image(store, [layer_tar([file(n, n.encode())]) for n in "abc"], "three:1")
    assert squash(store, "three:1", keep=3).id == three.id
    tagged = squash(store, "three:1", keep=2, tag=Reference.parse("three:2"))
    assert tagged.id == three.id
    assert tagged.tags == ("docker.io/library/three:1", "docker.io/library/three:2")
    assert len(store.images()) == 2


def test_a_bad_keep_or_a_missing_image_is_a_one_line_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    make_image(store, [layer_tar([file(n, n.encode())]) for n in "abc"], "three:1")
    for keep in (-1, 4):
        with pytest.raises(SquashError, match=f"cannot keep {keep} layers of three:1: it has 3"):
            squash(store, "three:1", keep=keep)
    with pytest.raises(StoreError, match="no such image: nope"):
        squash(store, "nope")
    assert issubclass(SquashError, KilnError)


def test_a_layer_that_cannot_be_read_leaves_no_image_nor_tag(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    good = layer_tar([file("a", b"a")])
    garbage = gzip.compress(b"this is no tar" * 100)
    original = make_image(store, [good, good, garbage], "broken:1", {2: "gzip"})
    blobs = sorted(store.blobs.iterdir())
    with pytest.raises(SquashError, match="cannot squash broken:1: ") as caught:
        squash(store, "broken:1", keep=1, tag=Reference.parse("broken:squashed"))
    assert "\n" not in str(caught.value)
    assert [image.id for image in store.images()] == [original.id]
    assert sorted(store.blobs.iterdir()) == blobs
    assert list(store.tmp.iterdir()) == []


def _dir_layer(root: Path, *, overlay: bool = False) -> bytes:
    out = io.BytesIO()
    write_dir_layer(root, out, overlay=overlay)
    return out.getvalue()


@pytest.mark.slow
def test_a_squashed_busybox_image_runs_in_docker(
    tmp_path: Path, busybox_rootfs: Path, docker_engine: DockerEngine
) -> None:
    """Layers made as kiln's builder makes them: overlay upper dirs with a 0/0 device for a
    deletion and an opaque directory."""
    store = Store(tmp_path / "root")
    first = tmp_path / "first"
    (first / "app").mkdir(parents=True)
    (first / "app" / "hello.txt").write_text("hello from a squashed image\n")
    (first / "app" / "scratch").write_text("deleted in the next layer\n")
    second = tmp_path / "second"
    (second / "app").mkdir(parents=True)
    os.mknod(second / "app" / "scratch", stat.S_IFCHR, os.makedev(0, 0))
    (second / "bin").mkdir()
    os.mknod(second / "bin" / "vi", stat.S_IFCHR, os.makedev(0, 0))
    (second / "etc").mkdir()
    os.setxattr(second / "etc", "trusted.overlay.opaque", b"y")
    (second / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    layers = [_dir_layer(busybox_rootfs), _dir_layer(first), _dir_layer(second, overlay=True)]
    make_image(store, layers, "busy:orig")
    squash(store, "busy:orig", keep=1, tag=Reference.parse("busy:squashed"))
    assert tree(unpack(store, "squashed", tmp_path)) == tree(unpack(store, "orig", tmp_path))

    archive = tmp_path / "squashed.tar"
    with open(archive, "wb") as out:
        save(store, ["busy:squashed"], out)
    assert "Loaded image: busy:squashed" in docker_engine.run("load", "-i", str(archive))
    script = "cat /app/hello.txt; ls /app; test -e /bin/vi || test -e /etc/group || echo gone"
    output = docker_engine.run(
        "run", "--rm", "--network", "none", "busy:squashed", "sh", "-c", script
    )
    assert output == "hello from a squashed image\nhello.txt\ngone\n"


def test_merge_layers_merges_each_range_and_keeps_the_layers_between(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    layers = [layer_tar(BASE), *(layer_tar(entries) for entries in UPPER)]
    original = make_image(store, layers, "app:orig")
    merged = merge_layers(store, original.id, [range(1, 3)], tags=[Reference.parse("app:mid")])

    assert merged.tags == ("docker.io/library/app:mid",)
    assert merged.diff_ids[0] == original.diff_ids[0]
    assert merged.diff_ids[2] == original.diff_ids[3]  # the top layer stays as it was
    # The merged layer's entry comes right after its layers' entries, before the next layer's.
    history = merged.config["history"]
    assert [entry.get("empty_layer", False) for entry in history] == [
        False, True, True, True, True, True, False, False, True
    ]  # fmt: skip
    assert history[6] == {"comment": f"merge layers 2 to 3 of {original.id}", "created": CREATED}
    assert history[7] == original.config["history"][6]
    assert tree(unpack(store, "mid", tmp_path)) == tree(unpack(store, "orig", tmp_path))
    with pytest.raises(SquashError, match="ranges must be in order"):
        merge_layers(store, original.id, [range(2, 4), range(0, 2)])
