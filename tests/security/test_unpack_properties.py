"""Random layers against the host: whatever a tar stream holds (files, directories, symlinks
absolute, relative, looping or through ``..``, hard links, whiteouts, opaque markers, setuid
modes), unpacking it, adding it as an archive, or merging it onto another layer's tree
creates, changes and reads nothing outside the tree, and fails, if it fails, with kiln's own
error."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.engine.snapshots import SnapshotError, apply_layer_dir, unpack_layer
from kiln.tree import Tree
from tests.security.support import Item, tar_bytes, tree_state

SECRET = b"host-secret-4b1e\n"
# Few names, so that entries meet: a directory and then a symlink at the same path, a
# whiteout of what a link leads to, a hard link to what a symlink names. (A ``..`` in an
# entry's own name is refused outright: tests/security/test_layers.py.)
PATHS = st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=2).map("/".join)
# Where symlinks point: at the host directory by its absolute path ("OUTSIDE"), up and out
# of the tree, at the tree's root, inside, at themselves.
SYMLINK_TARGETS = st.sampled_from(
    ["OUTSIDE", "OUTSIDE/secret", "OUTSIDE/dir", "../outside", "../outside/secret", "/../outside",
     "/", "..", "../..", "a", "a/b", "/a", ".", "b/../.."]
)  # fmt: skip
HARDLINK_TARGETS = PATHS | st.sampled_from(["OUTSIDE/secret", "../outside/secret", "../a", "/b"])
KINDS = ["dir"] * 3 + ["symlink"] * 3 + ["file"] * 2 + ["hardlink", "whiteout", "opaque", "fifo"]
TARGETS = {"symlink": SYMLINK_TARGETS, "hardlink": HARDLINK_TARGETS}
ENTRIES = st.lists(
    st.tuples(PATHS, st.sampled_from(KINDS)).flatmap(
        lambda entry: st.tuples(
            st.just(entry[0]),
            st.just(entry[1]),
            TARGETS.get(entry[1], st.just("")),
            st.sampled_from([0o4777, 0o755, 0]),
        )
    ),
    max_size=10,
)


def layer(entries: list[tuple[str, str, str, int]], outside: Path) -> bytes:
    items = []
    for path, kind, target, mode in entries:
        link = target.replace("OUTSIDE", str(outside))
        above, _, name = path.rpartition("/")
        if kind == "whiteout":
            items.append(Item(f"{above}/.wh.{name}".lstrip("/")))
        elif kind == "opaque":
            items.append(Item(f"{path}/.wh..wh..opq"))
        else:
            items.append(Item(path, kind, data=path.encode(), mode=mode, link=link))
    return tar_bytes(items)


def unpack(data: bytes, root: Path, *, whiteouts: bool) -> None:
    with Tree(root) as dest:
        try:
            unpack_layer(io.BytesIO(data), dest, whiteouts=whiteouts)
        except SnapshotError as err:
            assert "\n" not in str(err)


def assert_host_untouched(outside: Path, before: dict, root: Path) -> None:
    assert tree_state(outside) == before
    secret = os.stat(outside / "secret")
    for path in [root, *root.rglob("*")]:
        st_ = os.lstat(path)
        assert (st_.st_dev, st_.st_ino) != (secret.st_dev, secret.st_ino), path  # no link to it
        if stat.S_ISREG(st_.st_mode):
            assert path.read_bytes() != SECRET, path


@pytest.fixture
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory beside the tree: a secret, and a directory whose files must stay."""
    base = tmp_path_factory.mktemp("host")
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "keep").write_text("keep\n")
    (outside / "secret").write_bytes(SECRET)
    (outside / "secret").chmod(0o600)
    return base


PROPERTY = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(entries=ENTRIES, whiteouts=st.booleans())
def test_an_unpacked_layer_stays_in_its_tree(
    host: Path, tmp_path_factory: pytest.TempPathFactory, entries: list, whiteouts: bool
) -> None:
    """``whiteouts``: a layer (overlay format, links on the way refused); without: an ADDed
    archive (links on the way followed, inside the tree)."""
    outside = host / "outside"
    before = tree_state(outside)
    root = tmp_path_factory.mktemp("root")
    unpack(layer(entries, outside), root, whiteouts=whiteouts)
    assert_host_untouched(outside, before, root)


@PROPERTY
@given(base=ENTRIES, top=ENTRIES)
def test_a_layer_merged_onto_another_stays_in_the_tree(
    host: Path, tmp_path_factory: pytest.TempPathFactory, base: list, top: list
) -> None:
    """The copy snapshotter's merge: the base tree holds whatever links the first layer
    made, and the second layer's whiteouts and entries meet them."""
    outside = host / "outside"
    before = tree_state(outside)
    merged, upper = tmp_path_factory.mktemp("merged"), tmp_path_factory.mktemp("upper")
    unpack(layer(base, outside), merged, whiteouts=False)
    unpack(layer(top, outside), upper, whiteouts=True)
    with Tree(merged) as dest:
        try:
            apply_layer_dir(upper, dest)
        except SnapshotError as err:
            assert "\n" not in str(err)
    assert_host_untouched(outside, before, merged)


def test_the_strategy_reaches_the_host(host: Path, tmp_path: Path) -> None:
    """The generated layers can name the host: ``tarfile``'s own unfiltered extraction of
    one of them writes outside its tree, where kiln's does not."""
    outside = host / "outside"
    data = layer([("x", "symlink", "OUTSIDE/dir", 0o777), ("x/y", "file", "", 0o644)], outside)
    naive = tmp_path / "naive"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(naive, filter="fully_trusted")
    assert (outside / "dir" / "y").exists()
    (outside / "dir" / "y").unlink()
    before = tree_state(outside)
    (tmp_path / "kiln").mkdir()
    unpack(data, tmp_path / "kiln", whiteouts=False)
    assert_host_untouched(outside, before, tmp_path / "kiln")
