"""Untrusted trees: every path resolves inside the root, by the kernel (openat2) or by kiln's
own walk, and the two agree."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln import tree
from kiln.tree import Tree, TreeError


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "real" / "dir").mkdir(parents=True)
    (root / "real" / "dir" / "file").write_text("inside")
    (root / "abs").symlink_to("/real")  # absolute: from the tree's root, not the host's
    (root / "rel").symlink_to("real/dir")
    (root / "up").symlink_to("../../../../real")  # .. stops at the tree's root
    (root / "real" / "dir" / "back").symlink_to("..")
    (root / "loop").symlink_to("loop")
    (root / "host").symlink_to(str(tmp_path))  # a host path: means /<that path> inside
    return root


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs with the kernel's resolver and with kiln's own walk."""
    if request.param == "walk":
        monkeypatch.setattr(tree, "_have_openat2", False)
    yield str(request.param)


def where(fd: int, root: Path) -> str:
    """The path of ``fd`` relative to ``root`` (the kernel's view)."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    os.close(fd)
    real = str(root.resolve())
    assert target == real or target.startswith(real + "/"), f"{target} is outside {real}"
    return target[len(real) :].lstrip("/")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/abs/dir", "real/dir"),
        ("abs/dir/file", "real/dir/file"),
        ("/rel/file", "real/dir/file"),
        ("/up/dir", "real/dir"),
        ("/real/dir/back/dir", "real/dir"),
        ("/../../real", "real"),
        ("/", ""),
    ],
)
def test_links_resolve_inside_the_root(
    rootfs: Path, resolver: str, path: str, expected: str
) -> None:
    with Tree(rootfs) as root:
        fd = root.lookup(path)
        assert fd is not None
        assert where(fd, rootfs) == expected
        assert root.canonical(path, follow=True) == expected


def test_an_absolute_host_path_in_a_link_stays_in_the_tree(rootfs: Path, resolver: str) -> None:
    with Tree(rootfs) as root:
        assert root.lookup("/host/rootfs/real") is None  # /<tmp>/rootfs inside: not there
        assert root.read("/host/rootfs/real/dir/file") is None


def test_a_link_loop_is_an_error(rootfs: Path, resolver: str) -> None:
    with Tree(rootfs) as root, pytest.raises(TreeError, match="too many levels"):
        root.lookup("/loop/x")


def test_made_directories_follow_links_inside(rootfs: Path, resolver: str) -> None:
    with Tree(rootfs) as root:
        fd = root.directory("/host/new/deeper", make=(0, 0))
        assert where(fd, rootfs) == f"{str(rootfs.parent).lstrip('/')}/new/deeper"
    assert not (rootfs.parent / "new").exists()  # the host directory the link names


def test_a_layer_walk_refuses_links(rootfs: Path) -> None:
    with Tree(rootfs) as root, pytest.raises(TreeError, match="symbolic link"):
        root.entry("/abs/dir/x", links=False)


def test_reading_never_opens_a_fifo_or_a_device(rootfs: Path, resolver: str) -> None:
    os.mkfifo(rootfs / "fifo")
    os.mknod(rootfs / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (rootfs / "passwd").symlink_to("/fifo")
    with Tree(rootfs) as root:
        assert root.read("/passwd") is None  # would block forever if opened
        assert root.read("/null") is None
        assert root.read("/rel/file") == b"inside"


def test_metadata_goes_to_the_link_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host")
    victim.chmod(0o644)
    before = victim.stat()
    root = tmp_path / "root"
    root.mkdir()
    (root / "x").symlink_to(victim)
    with Tree(root) as t:
        entry = t.entry("x")
        with tree.opened(entry.parent):
            tree.set_metadata(
                entry.parent, entry.name, owner=(1, 1), mode=0o4777, mtime_ns=0,
                xattrs={"user.k": b"v"},
            )  # fmt: skip
    after = victim.stat()
    assert (after.st_mode, after.st_uid, after.st_mtime_ns) == (
        before.st_mode, before.st_uid, before.st_mtime_ns,
    )  # fmt: skip
    assert os.lstat(root / "x").st_uid == 1


# -- properties ------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "..", "."])
LINK_TARGETS = st.lists(NAMES, min_size=0, max_size=4).flatmap(
    lambda parts: st.sampled_from(["/" + "/".join(parts), "/".join(parts) or "."])
)
# A tree: paths of directories, files and symlinks to make, in order.
NODES = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
        st.sampled_from(["dir", "file", "link"]),
        LINK_TARGETS | st.sampled_from(["/", "..", "../..", "/etc", "../../../outside"]),
    ),
    max_size=12,
)
PATHS = st.lists(NAMES, min_size=0, max_size=5).map("/".join)


def build(root: Path, nodes: list[tuple[list[str], str, str]]) -> None:
    for parts, kind, target in nodes:
        path = root.joinpath(*parts)
        if os.path.lexists(path) or not all(
            root.joinpath(*parts[:i]).is_dir() and not root.joinpath(*parts[:i]).is_symlink()
            for i in range(1, len(parts))
        ):
            continue  # only trees whose own parents are real directories
        if kind == "dir":
            path.mkdir()
        elif kind == "file":
            path.write_text("/".join(parts))
        else:
            path.symlink_to(target)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (os.lstat(p).st_mode, os.lstat(p).st_mtime_ns)
        for p in directory.rglob("*")
    }


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(nodes=NODES, paths=st.lists(PATHS, min_size=1, max_size=6))
def test_kiln_walk_resolves_as_the_kernel_does_and_stays_inside(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    nodes: list[tuple[list[str], str, str]],
    paths: list[str],
) -> None:
    base = tmp_path_factory.mktemp("prop")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    root_dir = base / "root"
    root_dir.mkdir()
    build(root_dir, nodes)
    before = snapshot(outside)
    with Tree(root_dir) as root:
        for path in paths:
            for follow in (True, False):
                results = []
                for use_kernel in (True, False):
                    monkeypatch.setattr(tree, "_have_openat2", None if use_kernel else False)
                    try:
                        fd = root.lookup(path, follow=follow)
                    except TreeError:
                        results.append("loop")
                        continue
                    results.append(None if fd is None else where(fd, root_dir))
                assert results[0] == results[1], (path, follow)
            try:
                fd = root.directory(path + "/made", make=(0, 0))
            except (TreeError, NotADirectoryError, FileExistsError):
                continue
            where(fd, root_dir)  # asserts it is inside
    assert snapshot(outside) == before
