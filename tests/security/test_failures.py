"""The machine failing under kiln (a full disk, a damaged database) is one error line and
leaves the store as it was (item 16)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.support import NEEDS_RUNC, context
from tests.security.support import kiln, one_error_line

pytestmark = NEEDS_RUNC


@pytest.fixture
def small_store(tmp_path: Path, busybox_rootfs: Path) -> Iterator[Path]:
    """A store on a 12 MiB tmpfs, holding busybox:base."""
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(root)], check=True)
    try:
        status, output = kiln("import", str(busybox_rootfs), "busybox:base",
                              env={"KILN_ROOT": str(root)})  # fmt: skip
        assert status == 0, output
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def test_a_full_disk_is_one_error_and_the_store_goes_on(small_store: Path, tmp_path: Path) -> None:
    """ENOSPC was a traceback."""
    ctx = context(tmp_path, "FROM busybox:base\nCOPY big /big\n")
    (ctx / "big").write_bytes(b"\0" * (16 << 20))
    env = {"KILN_ROOT": str(small_store)}
    status, output = kiln("build", "-t", "big:1", str(ctx), env=env)
    assert status == 1
    assert "no space left on device" in one_error_line(output)
    assert "big" not in kiln("images", env=env)[1]  # no half-written image or tag...
    assert list((small_store / "work").iterdir()) == []  # ... nor work directory
    assert list((small_store / "tmp").iterdir()) == []  # ... nor temporary blob
    status, output = kiln("run", "--rm", "busybox:base", "/bin/echo", "still fine", env=env)
    assert (status, output) == (0, "still fine\n")


def test_a_damaged_store_database_is_one_error(tmp_path: Path) -> None:
    """SQLite errors were tracebacks."""
    root = tmp_path / "store"
    assert kiln("images", env={"KILN_ROOT": str(root)})[0] == 0
    (root / "kiln.db").write_bytes(b"this is not a database" * 100)
    for name in ("kiln.db-wal", "kiln.db-shm"):
        (root / name).unlink(missing_ok=True)
    status, output = kiln("images", env={"KILN_ROOT": str(root)})
    assert status == 1
    assert "kiln's store database: file is not a database" in one_error_line(output)
