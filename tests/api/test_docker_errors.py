"""docker-py's exceptions from kiln's docker-py-shaped API: a script's ``except
docker.errors.X`` catches what kiln raises, and kiln's ``except KilnError`` still does."""

from __future__ import annotations

import socket
from pathlib import Path

import docker.errors
import pytest

from kiln.api import Client
from kiln.errors import KilnError
from tests.api.support import context


def test_a_failed_build_is_docker_pys_build_error_with_an_iterator_for_a_log(
    client: Client, tmp_path: Path
) -> None:
    ctx = context(tmp_path, "FROM busybox:base\nRUN exit 3\n")
    with pytest.raises(docker.errors.BuildError) as failed:
        client.images.build(path=str(ctx), tag="bad:1")
    assert isinstance(failed.value, KilnError) and "exit code 3" in failed.value.msg
    log = failed.value.build_log
    assert iter(log) is log  # docker-py's is a stream, read once
    entries = list(log)
    assert entries[-1] == {"error": failed.value.msg, "errorDetail": {"message": failed.value.msg}}


def test_missing_images_are_image_not_found_for_get_and_remove(client: Client) -> None:
    for call in (client.images.get, client.images.remove):
        with pytest.raises(docker.errors.ImageNotFound, match="no such image: nowhere:1"):
            call("nowhere:1")


def test_removing_an_image_tagged_twice_is_an_api_error(client: Client, tmp_path: Path) -> None:
    image, _ = client.images.build(path=str(context(tmp_path, "FROM busybox:base\n")), tag="a:1")
    image.tag("a", "2")
    with pytest.raises(docker.errors.APIError, match="tagged 2 times"):
        client.images.remove(image.id)
    client.images.remove(image.id, force=True)
    with pytest.raises(docker.errors.NotFound):
        client.images.get("a:1")


def test_a_build_with_neither_path_nor_fileobj_is_a_type_error(client: Client) -> None:
    with pytest.raises(TypeError, match="You must specify a directory to build in path"):
        client.images.build(tag="x:1")


def test_saving_under_a_name_the_image_lacks_is_invalid_argument(
    client: Client, tmp_path: Path
) -> None:
    image, _ = client.images.build(path=str(context(tmp_path, "FROM busybox:base\n")), tag="s:1")
    with pytest.raises(docker.errors.InvalidArgument, match="other:1 is not a valid tag"):
        b"".join(image.save(named="other:1"))
    assert b"".join(image.save(named="s:1"))  # its own tag is fine


def test_loading_what_is_no_image_is_image_load_error(client: Client) -> None:
    with pytest.raises(docker.errors.ImageLoadError):
        client.images.load(b"this is not a tar of images")


def test_a_registry_that_cannot_be_reached_is_an_api_error(client: Client) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for call in (
        lambda: client.images.pull(f"127.0.0.1:{port}/app", tag="1", insecure=True),
        lambda: client.images.get_registry_data(f"127.0.0.1:{port}/app:1", insecure=True),
    ):
        with pytest.raises(docker.errors.APIError) as failed:
            call()
        assert failed.value.response is None and isinstance(failed.value, KilnError)
