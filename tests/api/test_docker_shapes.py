"""docker-py's call shapes that kiln's ``client.images`` takes as docker-py does: a digest
given as the tag, ``auth_config``, a streamed push, what prune reports."""

from __future__ import annotations

from pathlib import Path

import docker
import docker.errors
import pytest

from kiln.api import Client
from tests.api.support import context
from tests.engines import DockerEngine
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

    image.reload()  # (attrs are what was known when the image was asked for, as docker-py's)
    assert image.attrs["RepoDigests"] == [f"{repository}@{digest}"]  # as docker's, once pushed

    other = Client(root=tmp_path / "other-store")
    pulled = other.images.pull(repository, tag=digest)  # docker-py: repository@digest
    assert pulled.id == image.id
    assert pulled.attrs["RepoDigests"] == [f"{repository}@{digest}"]
    other.images.remove(pulled.id, force=True)  # and the record goes with the image
    assert other.store is not None and other.store.repo_digests(digest) == []


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


def test_history_has_the_engines_keys_and_types(
    client: Client, tmp_path: Path, docker_engine: DockerEngine
) -> None:
    """The same image's history from kiln and from a Docker engine that loaded it."""
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo h > /h\nENV A=1\nRUN echo i > /i\n")
    image, _ = client.images.build(path=str(ctx), tag="hist:1")
    archive = tmp_path / "hist.tar"
    archive.write_bytes(b"".join(image.save(named="hist:1")))
    docker_engine.run("load", "-i", str(archive))
    engine = docker.DockerClient(base_url=docker_engine.host)
    try:
        theirs = engine.images.get("hist:1").history()
    finally:
        engine.close()
    ours = image.history()
    assert len(ours) == len(theirs)
    for mine, engines in zip(ours, theirs, strict=True):
        assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in engines.items()}
        assert (mine["Created"], mine["CreatedBy"]) == (engines["Created"], engines["CreatedBy"])
        assert (mine["Size"] > 0) == (engines["Size"] > 0)  # a layer, or none
    assert ours[0]["Id"] == theirs[0]["Id"] == image.id
