"""Fixtures of the attack tests: a store of their own, and busybox as a layer to build on."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def busybox_layer(busybox_rootfs: Path) -> bytes:
    """busybox's root filesystem as a layer tar, to put crafted layers on."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(busybox_rootfs.rglob("*")):
            tar.add(path, str(path.relative_to(busybox_rootfs)), recursive=False)
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$KILN_ROOT`` for the test, for kiln run in-process and as a command."""
    root = tmp_path / "kiln-root"
    monkeypatch.setenv("KILN_ROOT", str(root))
    return root


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A host directory no image may read or change: a secret and a file to protect."""
    home = tmp_path / "victim"
    home.mkdir()
    (home / "secret").write_text("host-secret-6f1d\n")
    (home / "secret").chmod(0o600)
    (home / "b").mkdir()
    (home / "b" / "keep").write_text("keep\n")
    return home
