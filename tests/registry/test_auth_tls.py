"""Token auth (a token server signing real JWTs with a test key) and TLS (a test CA), against
Debian's docker-registry."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.reference import Reference
from kiln.registry import RegistryClient, RegistryError, push_image
from kiln.registry.client import file_chunks
from kiln.store import Store
from tests.registries import (
    Registry,
    TokenServer,
    make_certificate,
    outward_address,
    start_registry,
)
from tests.registry.test_push import invoke, kiln_root, skopeo  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[Registry, TokenServer]]:
    signer = make_certificate(tmp_path / "keys", "token-signer")
    tokens = TokenServer(signer, "kiln-registry", "kiln-issuer", {"robot": "t0ken-pw"})
    started = start_registry(tmp_path / "registry", token=tokens)
    yield started, tokens
    started.stop()
    tokens.stop()


def test_bearer_tokens_from_the_realm_the_registry_names(
    kiln_root: Path,  # noqa: F811
    token_registry: tuple[Registry, TokenServer],
) -> None:
    registry, tokens = token_registry
    anonymous = invoke("push", "app:1", f"{registry.host}/app:1", ok=False)
    assert anonymous.exit_code == 1 and "token service refused" in anonymous.output
    invoke("login", "-u", "robot", "--password-stdin", registry.host, input="t0ken-pw\n")
    tokens.requests.clear()
    output = invoke("push", "app:1", f"{registry.host}/app:1").output
    assert "t0ken-pw" not in output
    # One token per scope (pull for the HEADs, then pull,push), not one per request, although
    # four blobs go up in parallel.
    assert len(tokens.requests) == 2
    assert "scope=repository%3Aapp%3Apull%2Cpush&account=robot" in tokens.requests[1]
    creds = "robot:t0ken-pw"
    inspected = skopeo("inspect", "--tls-verify=false", "--creds", creds,
                       f"docker://{registry.host}/app:1")  # fmt: skip
    assert len(json.loads(inspected)["Layers"]) == 3


def test_tls_verified_with_the_registry_ca(
    kiln_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    ca = make_certificate(tmp_path / "pki", "test-ca")
    server = make_certificate(tmp_path / "pki", "server", issuer=ca, hosts=("127.0.0.1",))
    registry = start_registry(tmp_path / "tls-registry", tls=server)
    try:
        store = Store(kiln_root)
        target = Reference.parse(f"{registry.host}/secure:1")
        # Loopback registries are insecure by default (as in dockerd): ask for TLS.
        untrusting = RegistryClient(registry.host, insecure=False, certs_dir=tmp_path / "none")
        with untrusting, pytest.raises(RegistryError, match=f"cannot reach {registry.host}"):
            push_image(store, "app:1", target, untrusting)
        certs = tmp_path / "certs.d"
        (certs / registry.host).mkdir(parents=True)
        (certs / registry.host / "ca.crt").write_bytes(ca.cert_pem)
        with RegistryClient(registry.host, insecure=False, certs_dir=certs) as client:
            pushed = push_image(store, "app:1", target, client)
        inspected = skopeo("inspect", "--cert-dir", str(certs / registry.host),
                           f"docker://{registry.host}/secure:1")  # fmt: skip
        assert json.loads(inspected)["Digest"] == pushed.digest
        # --insecure-registry: TLS without verification
        with RegistryClient(registry.host, insecure=True) as client:
            assert client.blob_exists("secure", pushed_config(store))
    finally:
        registry.stop()


def pushed_config(store: Store) -> str:
    return store.image("app:1").config_digest


def test_a_large_blob_goes_up_in_chunks(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
) -> None:
    """Chunked upload (PATCH with Content-Range), here with 64 KiB chunks of a layer."""
    store = Store(kiln_root)
    image = store.image("app:1")
    layer = max(image.layers, key=lambda d: d.size)
    path = store.blob_path(layer.digest)
    with RegistryClient(registry.host) as client:
        client.upload_blob(
            "chunked", layer.digest, layer.size, file_chunks(path, 16 << 10),
            chunked_above=0, chunk_size=64 << 10,
        )  # fmt: skip
        assert client.blob_exists("chunked", layer.digest)
        received = bytearray()
        client.get_blob("chunked", layer.digest, received.extend)
    assert bytes(received) == path.read_bytes()
    assert layer.size > 3 * (64 << 10)  # so that it took several PATCHes


def test_an_identity_token_is_exchanged_for_access_tokens(
    kiln_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """``auths.<host>.identitytoken`` (what docker login stores for OAuth2 registries): kiln
    POSTs it to the realm as a refresh token and never sends it to the registry itself."""
    signer = make_certificate(tmp_path / "keys", "token-signer")
    tokens = TokenServer(signer, "kiln-registry", "kiln-issuer", {"robot": "pw"},
                         refresh_tokens={"rt-1234": "robot"})  # fmt: skip
    registry = start_registry(tmp_path / "registry", token=tokens)
    try:
        config = tmp_path / "docker-config" / "config.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"auths": {registry.host: {"identitytoken": "rt-1234"}}}))
        invoke("push", "app:1", f"{registry.host}/app:1")
        posts = [r for r in tokens.requests if r.startswith("POST ")]
        assert posts and all("grant_type=refresh_token" in p for p in posts)
        assert "repository%3Aapp%3Apull%2Cpush" in posts[-1]
        assert "rt-1234" not in registry.log.read_text()
    finally:
        registry.stop()
        tokens.stop()


def test_plain_http_elsewhere_than_loopback_needs_insecure_registry(
    kiln_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    registry = start_registry(tmp_path / "outward", address=address)
    try:
        refused = invoke("push", "app:1", f"{registry.host}/app:1", ok=False)
        assert refused.exit_code == 1 and f"cannot reach {registry.host}" in refused.output
        invoke("push", "--insecure-registry", registry.host, "app:1", f"{registry.host}/app:1")
        skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/app:1")
    finally:
        registry.stop()
