"""A registry that fails: a proxy in front of it drops connections and answers 500. kiln
retries what can be retried, and a push that fails for good leaves the store as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.registries import FaultyProxy, RedirectingFront, Registry
from tests.registry.test_push import invoke, kiln_root, skopeo  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("runc") is None or os.geteuid() != 0,
    reason="building needs root and runc (.ci/run installs it)",
)


def flaky(faults: int = 4) -> Callable[[int, str, str], str]:
    """Every third request gets a 500 and every fifth is dropped unanswered, until ``faults``
    have been: uploads run in parallel, and five faults landing on one of them would exhaust
    kiln's five tries, failing the test by chance."""
    lock = threading.Lock()
    injected = 0

    def fault(number: int, method: str, path: str) -> str:
        nonlocal injected
        action = "drop" if number % 5 == 0 else "500" if number % 3 == 0 else ""
        with lock:
            if not action or injected == faults:
                return ""
            injected += 1
        return action

    return fault


def test_push_and_pull_recover_from_drops_and_500s(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = FaultyProxy(registry.host, flaky())
    try:
        pushed = invoke("push", "-q", "app:1", f"{proxy.host}/app:1").output.strip()
        assert any(i.startswith("500") for i in proxy.injected)
        assert any(i.startswith("drop") for i in proxy.injected)
        direct = json.loads(skopeo("inspect", "--tls-verify=false",
                                   f"docker://{registry.host}/app:1"))  # fmt: skip
        assert direct["Digest"] == pushed
        monkeypatch.setenv("KILN_ROOT", str(tmp_path / "puller"))
        proxy.fault, pushing = flaky(), len(proxy.injected)  # the pull gets faults of its own
        invoke("pull", f"{proxy.host}/app:1")
        assert len(proxy.injected) > pushing
        assert invoke("run", "--rm", f"{proxy.host}/app:1").output == "hello from kiln\nbuilt\n"
    finally:
        proxy.stop()


def test_a_push_that_fails_for_good_leaves_the_store_intact(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
) -> None:
    def broken_uploads(number: int, method: str, path: str) -> str:
        return "500" if method == "PUT" and "/blobs/uploads/" in path else ""

    images_before = invoke("images").output
    proxy = FaultyProxy(registry.host, broken_uploads)
    try:
        failed = invoke("push", "app:1", f"{proxy.host}/app:1", ok=False)
    finally:
        proxy.stop()
    assert failed.exit_code == 1 and "answered 500" in failed.output
    assert invoke("images").output == images_before
    blobs = kiln_root / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert not any((kiln_root / "tmp").iterdir())
    # the compressed layers made on the way are kept, and the next push uses them
    again = invoke("push", "app:1", f"{registry.host}/app:1").output
    assert "compressing" not in again and again.count(": pushed") == 4


def test_redirected_blobs_are_fetched_without_the_registry_credentials(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoke("push", "app:1", f"{registry.host}/app:1")
    front = RedirectingFront(registry.host, "kiln", "front-pw")
    try:
        invoke("login", "-u", "kiln", "--password-stdin", front.host, input="front-pw\n")
        monkeypatch.setenv("KILN_ROOT", str(tmp_path / "redirected"))
        invoke("pull", f"{front.host}/app:1")
        assert invoke("run", "--rm", f"{front.host}/app:1").output == "hello from kiln\nbuilt\n"
        assert len(front.storage_saw) == 4 and front.storage_saw == [None] * 4
    finally:
        front.stop()


def test_a_pull_waits_as_long_as_429_says_and_then_succeeds(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rate limited (Docker Hub's answer to busy CI): the manifest is asked for again after
    the Retry-After the registry gave, not after kiln's own shorter back-off."""
    invoke("push", "-q", "app:1", f"{registry.host}/app:1")
    limited: list[int] = []

    def rate_limited(number: int, method: str, path: str) -> str:
        if "/manifests/" in path and len(limited) < 2:
            limited.append(number)
            return "429 1"
        return ""

    proxy = FaultyProxy(registry.host, rate_limited)
    try:
        monkeypatch.setenv("KILN_ROOT", str(tmp_path / "puller"))
        invoke("pull", f"{proxy.host}/app:1")
        assert invoke("run", "--rm", f"{proxy.host}/app:1").output == "hello from kiln\nbuilt\n"
    finally:
        proxy.stop()
    assert [i.split()[0] for i in proxy.injected] == ["429", "429"]
    asked = [t for t, _, path in proxy.times if "/manifests/" in path]
    assert len(asked) >= 3 and asked[1] - asked[0] >= 0.9 and asked[2] - asked[1] >= 0.9


def test_a_registry_that_stays_at_429_is_one_line_after_the_retries(
    kiln_root: Path,  # noqa: F811
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoke("push", "-q", "app:1", f"{registry.host}/app:1")
    proxy = FaultyProxy(registry.host, lambda n, m, path: "429 0" if "/manifests/" in path else "")
    try:
        monkeypatch.setenv("KILN_ROOT", str(tmp_path / "puller"))
        failed = invoke("pull", f"{proxy.host}/app:1", ok=False)
    finally:
        proxy.stop()
    assert failed.exit_code == 1
    assert failed.output == f"error: {proxy.host}/app:1: {proxy.host} answered 429\n"
    assert len(proxy.injected) == 5  # kiln's retry budget, then it stops asking
    assert invoke("images").output.count("\n") == 1  # nothing pulled: the header line only
