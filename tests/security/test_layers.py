"""Crafted layers and archives against the host: unpacking, the copy snapshotter, ADD.

Each test is an attack: a layer that tries to change, delete or read a host file outside
the store. The host is checked to be untouched; a layer that cannot be applied safely is
one clear error line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.engine.support import NEEDS_RUNC, context, invoke
from tests.security.support import (
    Item,
    image_archive,
    kiln,
    one_error_line,
    tar_bytes,
    tree_state,
)

pytestmark = NEEDS_RUNC


def load(tmp_path: Path, tag: str, layers: list[bytes]) -> None:
    archive = image_archive(tmp_path / f"{tag.replace(':', '-')}.tar", tag, layers)
    status, stderr = kiln("load", "-i", str(archive))
    assert status == 0, stderr


def test_a_directory_then_a_symlink_never_changes_the_host_file(
    store: Path, tmp_path: Path, busybox_layer: bytes, victim: Path
) -> None:
    """Item 1: ``x/`` (04777) and then ``x -> host file``: the directory's metadata, set
    after the entries, went through the symlink to the host file."""
    target = victim / "secret"
    before = tree_state(victim)
    evil = tar_bytes([Item("x", "dir", mode=0o4777), Item("x", "symlink", link=str(target))])
    load(tmp_path, "evil:1", [busybox_layer, evil])
    status, stderr = kiln("run", "--rm", "evil:1", "readlink", "/x")
    assert status == 0, stderr
    assert tree_state(victim) == before
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_same_archive_added_in_a_build_never_changes_the_host_file(
    kiln_root: Path, tmp_path: Path, victim: Path
) -> None:
    target = victim / "secret"
    before = tree_state(victim)
    ctx = context(tmp_path, "FROM busybox:base\nADD evil.tar /opt/\nRUN test -L /opt/x\n")
    (ctx / "evil.tar").write_bytes(
        tar_bytes([Item("x", "dir", mode=0o4777), Item("x", "symlink", link=str(target))])
    )
    invoke("build", "-q", "-t", "added:1", str(ctx))
    assert tree_state(victim) == before


def test_an_archive_added_follows_its_own_links_inside_the_destination(
    kiln_root: Path, tmp_path: Path, victim: Path
) -> None:
    """An entry below a symlink the archive made lands inside the destination, where the
    link leads there; a link to a host path leads nowhere on the host."""
    before = tree_state(victim)
    ctx = context(
        tmp_path,
        "FROM busybox:base\nADD evil.tar /opt/\n"
        "RUN test -f /opt/real/in.txt && test ! -e /host-file\n",
    )
    (ctx / "evil.tar").write_bytes(
        tar_bytes(
            [
                Item("real", "dir", mode=0o755),
                Item("link", "symlink", link="real"),
                Item("link/in.txt", data=b"inside"),
                Item("out", "symlink", link=str(victim)),
                Item("out/pwned", data=b"x"),
            ]
        )
    )
    invoke("build", "-q", "-t", "added:2", str(ctx))
    assert tree_state(victim) == before


def test_a_whiteout_of_dot_dot_is_refused_and_the_store_keeps_its_snapshots(
    store: Path, tmp_path: Path, busybox_layer: bytes
) -> None:
    """Item 10: ``.wh..`` named the snapshots directory itself, removing every unpacked
    layer of the store, those of running builds included."""
    load(tmp_path, "good:1", [busybox_layer])
    status, stderr = kiln("run", "--rm", "good:1", "true")
    assert status == 0, stderr
    snapshots = sorted(os.listdir(store / "snapshots"))
    for name in (".wh..", ".wh.", "dir/.wh.."):
        evil = tar_bytes([Item("dir", "dir", mode=0o755), Item(name)])
        load(tmp_path, "evil:2", [busybox_layer, evil])
        status, stderr = kiln("run", "--rm", "evil:2", "true")
        assert status == 1
        assert "is not a valid whiteout" in one_error_line(stderr)
    assert sorted(os.listdir(store / "snapshots")) == snapshots
    assert kiln("run", "--rm", "good:1", "true")[0] == 0


@pytest.mark.parametrize("name", ["../pwned", "dir/../../pwned", "../../../../pwned", "/../pwned"])
def test_an_entry_named_through_dot_dot_is_refused(
    store: Path, tmp_path: Path, busybox_layer: bytes, name: str
) -> None:
    """Item 1's cousin: an entry whose own name climbs out of the layer."""
    evil = tar_bytes([Item("dir", "dir", mode=0o755), Item(name, data=b"x")])
    load(tmp_path, "climb:1", [busybox_layer, evil])
    status, stderr = kiln("run", "--rm", "climb:1", "true")
    assert status == 1
    assert "escapes the layer" in one_error_line(stderr)
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("", "is a hard link to nothing"),
        ("missing", "which the layer does not hold"),
        ("/etc/passwd", "which the layer does not hold"),  # the host's, were it followed
        ("dir", "cannot link to"),
    ],
)
def test_hard_links_to_nothing_are_one_clear_error(
    store: Path, tmp_path: Path, busybox_layer: bytes, link: str, message: str
) -> None:
    """Item 16: a hard link with an empty or missing target was a traceback."""
    evil = tar_bytes([Item("dir", "dir", mode=0o755), Item("h", "hardlink", link=link)])
    load(tmp_path, "links:1", [busybox_layer, evil])
    status, stderr = kiln("run", "--rm", "links:1", "true")
    assert status == 1
    assert message in one_error_line(stderr)


def test_overlay_xattrs_from_a_layer_are_not_applied(
    store: Path, tmp_path: Path, busybox_layer: bytes
) -> None:
    """Item 16: ``trusted.overlay.opaque`` on /bin in a layer's PAX records would hide the
    layers below (and ``redirect`` would send lookups elsewhere); only kiln sets them."""
    evil = tar_bytes([
        Item("bin", "dir", mode=0o755, pax={"SCHILY.xattr.trusted.overlay.opaque": "y"}),
        Item("bin/extra", data=b"x", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"}),
    ])  # fmt: skip
    load(tmp_path, "xattrs:1", [busybox_layer, evil])
    status, stderr = kiln("run", "--rm", "xattrs:1", "ls", "/bin/true", "/bin/extra")
    assert status == 0, stderr
    for snapshot in (store / "snapshots").iterdir():
        for path in [snapshot, *snapshot.rglob("*")]:
            names = os.listxattr(path, follow_symlinks=False)
            assert not [n for n in names if n.startswith("trusted.overlay.")], path


def test_the_copy_snapshotter_never_deletes_through_an_image_symlink(
    store: Path, tmp_path: Path, busybox_layer: bytes, victim: Path
) -> None:
    """Item 9: a layer's symlink to a host directory, then a whiteout below it in the next
    layer: the copy snapshotter deleted the host directory's entry."""
    before = tree_state(victim)
    first = tar_bytes([Item("a", "symlink", link=str(victim)), Item("c", "symlink", link="/")])
    second = tar_bytes([
        Item("a", "dir", mode=0o755), Item("a/.wh.b"), Item("a/.wh.secret"),
        Item("c/" + str(victim).lstrip("/") + "/pwned", data=b"x"),
    ])  # fmt: skip
    load(tmp_path, "copy:1", [busybox_layer, first, second])
    status, stderr = kiln("run", "--rm", "copy:1", "true", env={"KILN_SNAPSHOTTER": "copy"})
    assert status == 0, stderr
    assert tree_state(victim) == before


def test_a_run_step_that_swaps_a_directory_for_a_host_symlink_changes_nothing_outside(
    kiln_root: Path, tmp_path: Path, victim: Path
) -> None:
    """Item 9, the other way: the copy snapshotter's diff wrote whiteouts for the old
    directory's entries through the new symlink, onto the host."""
    before = tree_state(victim)
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN mkdir -p /data/b /data/c && touch /data/b/x /data/secret\n"
        f"RUN rm -rf /data && ln -s {victim} /data\n",
    )
    status, stderr = kiln("build", "-q", "-t", "swap:1", str(ctx), env={"KILN_SNAPSHOTTER": "copy"})
    assert status == 0, stderr
    assert tree_state(victim) == before
    status, stderr = kiln("run", "--rm", "swap:1", "readlink", "/data")
    assert status == 0, stderr
