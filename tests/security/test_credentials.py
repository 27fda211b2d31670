"""Registry credentials go only to the registry that asked for them (item 11): never to an
upload Location on another host, never to a token realm elsewhere or over plain HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.support import NEEDS_RUNC
from tests.security.crafted import CraftedRegistry, crafted_registry
from tests.security.support import kiln, one_error_line

pytestmark = NEEDS_RUNC

PASSWORD = "s3cret-pa55"


@pytest.fixture
def registries() -> Iterator[tuple[CraftedRegistry, CraftedRegistry]]:
    """The registry the credentials are for, and another host (by another name)."""
    with crafted_registry() as registry, crafted_registry() as other:
        yield registry, other


@pytest.fixture
def docker_config(tmp_path: Path, registries: tuple[CraftedRegistry, CraftedRegistry]) -> Path:
    config = tmp_path / "docker-config"
    config.mkdir()
    auth = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {registries[0].host: {"auth": auth}}}))
    return config


def leaked(registry: CraftedRegistry) -> list[str]:
    """What of the credentials reached ``registry``: Authorization headers, in any form."""
    basic = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    return [
        f"{r.method} {r.path}"
        for r in registry.log
        if "Authorization" in r.headers or PASSWORD in r.path or basic in r.path
    ]


def test_an_upload_location_on_another_host_gets_no_credentials(
    kiln_root: Path, registries: tuple[CraftedRegistry, CraftedRegistry], docker_config: Path
) -> None:
    registry, other = registries
    registry.challenge = 'Basic realm="crafted"'
    elsewhere = f"http://localhost:{other.port}/upload/x"
    registry.serve("POST", "/v2/x/blobs/uploads/", 202, headers={"Location": elsewhere})
    registry.serve("PUT", "/v2/x/manifests/1", 201)
    other.serve("PUT", "/upload/x", 201)
    status, output = kiln(
        "push", "busybox:base", f"{registry.host}/x:1", env={"DOCKER_CONFIG": str(docker_config)}
    )
    assert status == 0, output
    assert any(r.method == "PUT" for r in other.log)  # the upload went there...
    assert leaked(other) == []  # ... without the credentials
    assert any("Authorization" in r.headers for r in registry.log)  # which the registry got


@pytest.mark.parametrize(
    "realm",
    [
        "http://localhost:{port}/token",  # another host, plain HTTP
        "https://localhost:{port}/token",  # another host
        "https://auth.example.invalid/token",  # another domain altogether
    ],
)
def test_a_token_realm_elsewhere_never_gets_the_password(
    kiln_root: Path,
    registries: tuple[CraftedRegistry, CraftedRegistry],
    docker_config: Path,
    realm: str,
) -> None:
    registry, other = registries
    registry.challenge = f'Bearer realm="{realm.format(port=other.port)}",service="crafted"'
    status, output = kiln("pull", f"{registry.host}/x:1", env={"DOCKER_CONFIG": str(docker_config)})
    assert status == 1
    assert "kiln sends credentials only over TLS to the registry's own host" in one_error_line(
        output
    )
    assert PASSWORD not in output
    assert other.log == []


@pytest.mark.parametrize(
    ("realm", "registry", "insecure", "allowed"),
    [
        ("https://auth.docker.io/token", "docker.io", False, True),  # registry-1.docker.io
        ("https://gitlab.com/jwt/auth", "registry.gitlab.com", False, True),
        ("https://quay.io/v2/auth", "quay.io", False, True),
        ("https://gitlab.example.com/jwt", "registry.example.com", False, True),
        ("http://quay.io/v2/auth", "quay.io", False, False),  # plain HTTP
        ("https://evil.example.net/t", "registry.example.com", False, False),
        ("https://example.com.evil.net/t", "registry.example.com", False, False),
        ("https://10.0.0.2/token", "10.0.0.1:5000", True, False),  # addresses: exact only
        ("http://10.0.0.1:5001/token", "10.0.0.1:5000", True, True),  # insecure, same host
        ("http://10.0.0.1:5001/token", "10.0.0.1:5000", False, False),
    ],
)
def test_which_realms_may_receive_a_password(
    realm: str, registry: str, insecure: bool, allowed: bool
) -> None:
    from kiln.registry.client import RegistryClient

    with RegistryClient(registry, insecure=insecure, anonymous=True) as client:
        assert client._may_get_password(realm) is allowed
