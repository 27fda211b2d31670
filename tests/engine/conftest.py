"""A kiln store with a busybox base image, for the build tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.support import invoke


@pytest.fixture
def kiln_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_rootfs: Path) -> Path:
    """``$KILN_ROOT`` for the test, holding ``busybox:base``."""
    root = tmp_path / "kiln-root"
    monkeypatch.setenv("KILN_ROOT", str(root))
    invoke("import", str(busybox_rootfs), "busybox:base")
    return root
