"""docker-py's call shapes that kiln's ``client.images`` takes as docker-py does: a digest
given as the tag, ``auth_config``, a streamed push, what prune reports."""

from __future__ import annotations

from pathlib import Path

import docker.errors
import pytest

from kiln.api import Client
from tests.api.support import context
from tests.registries import Registry


def test_push_streams_dicts_or_lines_and_pull_takes_a_digest_as_the_tag(
    client: Client, tmp_path: Path, registry: Registry
) -> None:
    repository = f"{registry.host}/shapes/app"
    image, _ = client.images.build(
        path=str(context(tmp_path, "FROM busybox:base\nRUN echo s > /s\n")), tag=f"{repository}:1"
    )
    entries = client.images.push(repository, tag="1", stream=True, decode=True)
    assert not isinstance(entries, str | bytes)
    decoded = list(entries)
    assert all(isinstance(entry, dict) for entry in decoded)
    digest = decoded[-1]["aux"]["Digest"]
    lines = list(client.images.push(repository, tag="1", stream=True))
    assert all(isinstance(line, str) for line in lines) and digest in lines[-1]

    other = Client(root=tmp_path / "other-store")
    pulled = other.images.pull(repository, tag=digest)  # docker-py: repository@digest
    assert pulled.id == image.id


def test_auth_config_is_used_by_pull_push_and_registry_data(
    client: Client, tmp_path: Path, basic_auth_registry: Registry
) -> None:
    repository = f"{basic_auth_registry.host}/auth/app"
    client.images.build(path=str(context(tmp_path, "FROM busybox:base\n")), tag=f"{repository}:1")
    with pytest.raises(docker.errors.APIError):
        client.images.push(repository, tag="1")  # no credentials anywhere
    auth = {"username": "kiln", "password": "s3cret-pw"}
    assert "Digest" in client.images.push(repository, tag="1", auth_config=auth)
    assert client.images.get_registry_data(f"{repository}:1", auth_config=auth).id
    other = Client(root=tmp_path / "other-store")
    with pytest.raises(docker.errors.APIError):
        other.images.pull(repository, tag="1")
    assert other.images.pull(repository, tag="1", auth_config=auth).tags == [f"{repository}:1"]


def test_prune_reports_the_ids_it_deleted(client: Client, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo v1 > /v\n")
    old, _ = client.images.build(path=str(ctx), tag="web:1")
    (ctx / "Dockerfile").write_text("FROM busybox:base\nRUN echo v2 > /v\n")
    client.images.build(path=str(ctx), tag="web:1")  # the old one is left untagged
    pruned = client.images.prune()
    assert pruned["ImagesDeleted"] == [{"Deleted": old.id}]
    assert pruned["SpaceReclaimed"] > 0
    assert client.images.prune()["ImagesDeleted"] is None  # nothing more, as docker says it
