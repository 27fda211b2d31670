"""A native client whose store holds a busybox base image, for the API tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.api import Client
from kiln.reference import Reference
from kiln.store.transfer import import_rootfs


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_rootfs: Path) -> Client:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    client = Client(root=tmp_path / "store")
    assert client.store is not None
    import_rootfs(client.store, busybox_rootfs, Reference.parse("busybox:base"))
    return client
