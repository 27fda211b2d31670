"""Image paths resolved inside the root filesystem: an image's symlinks never lead out."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.engine.scope import in_scope
from kiln.errors import KilnError


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "real" / "dir").mkdir(parents=True)
    (root / "abs").symlink_to("/real")  # absolute: from the image's root, not the host's
    (root / "rel").symlink_to("real/dir")
    (root / "up").symlink_to("../../../../real")  # .. stops at the image's root
    (root / "real" / "dir" / "back").symlink_to("..")
    (root / "loop").symlink_to("loop")
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/abs/dir", "real/dir"),
        ("abs/dir/new/deeper", "real/dir/new/deeper"),
        ("/rel/file", "real/dir/file"),
        ("/up/dir", "real/dir"),
        ("/real/dir/back/dir", "real/dir"),
        ("/../../etc/passwd", "etc/passwd"),
        ("/", ""),
    ],
)
def test_links_resolve_inside_the_root(rootfs: Path, path: str, expected: str) -> None:
    assert in_scope(rootfs, path) == rootfs / expected


def test_a_link_loop_is_an_error(rootfs: Path) -> None:
    with pytest.raises(KilnError, match="too many levels of symbolic links"):
        in_scope(rootfs, "/loop/x")
