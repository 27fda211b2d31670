"""An image's /etc/passwd and /etc/group are untrusted: a FIFO, a device or a broken entry
is one clear error, never a hang or a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.engine.support import NEEDS_RUNC, context
from tests.security.support import Item, image_archive, kiln, one_error_line, tar_bytes

pytestmark = NEEDS_RUNC


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        # Item 13: a FIFO at /etc/passwd hung the build for ever, SIGTERM included.
        ([Item("etc", "dir", mode=0o755), Item("etc/passwd", "fifo")], "unable to find user app"),
        (
            [Item("etc", "dir", mode=0o755), Item("etc/passwd", "symlink", link="/dev/zero")],
            "unable to find user app",
        ),
        # Item 16: a uid that is no number was a traceback.
        (
            [
                Item("etc", "dir", mode=0o755),
                Item("etc/passwd", data=b"app:x:abc:def::/:/bin/sh\n"),
            ],
            "no numeric uid",
        ),
    ],
)
def test_a_hostile_passwd_is_one_error(
    store: Path,
    tmp_path: Path,
    busybox_layer: bytes,
    entries: list[Item],
    message: str,
) -> None:
    archive = image_archive(tmp_path / "evil.tar", "evil:1", [busybox_layer, tar_bytes(entries)])
    assert kiln("load", "-i", str(archive))[0] == 0
    for dockerfile in ("FROM evil:1\nUSER app\nRUN true\n", "FROM evil:1\nCOPY --chown=app f /f\n"):
        ctx = context(tmp_path, dockerfile, {"f": "f"})
        started = time.monotonic()
        status, stderr = kiln("build", "-q", str(ctx), timeout=60)
        assert status == 1
        assert message in one_error_line(stderr)
        assert time.monotonic() - started < 30
