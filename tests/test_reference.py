"""Image references as the docker CLI reads and prints them."""

from __future__ import annotations

import pytest

from kiln.reference import Reference, ReferenceError


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("me/app:v1", "docker.io/me/app:v1", "me/app:v1"),
        ("localhost:5000/app", "localhost:5000/app:latest", "localhost:5000/app:latest"),
        ("localhost/app:2", "localhost/app:2", "localhost/app:2"),
        ("quay.io/org/app@sha256:" + "a" * 64, "quay.io/org/app@sha256:" + "a" * 64,
         "quay.io/org/app@sha256:" + "a" * 64),
        # atomic-reactor's ImageName got these wrong: a registry with no dot, a digest alone
        ("localhost/foo", "localhost/foo:latest", "localhost/foo:latest"),
        ("repo@sha256:" + "b" * 64, "docker.io/library/repo@sha256:" + "b" * 64,
         "repo@sha256:" + "b" * 64),
        ("app:1@sha256:" + "c" * 64, "docker.io/library/app:1@sha256:" + "c" * 64,
         "app:1@sha256:" + "c" * 64),
        # Docker Hub's other names
        ("index.docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("registry-1.docker.io/me/app:2", "docker.io/me/app:2", "me/app:2"),
        ("docker.io/busybox:1", "docker.io/library/busybox:1", "busybox:1"),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
    ],
)  # fmt: skip
def test_parse_normalises(text: str, full: str, familiar: str) -> None:
    reference = Reference.parse(text)
    assert str(reference) == full
    assert reference.familiar == familiar


@pytest.mark.parametrize("text", ["Busybox", "app:bad/tag", "app@sha256:xyz", "a//b", ""])
def test_invalid_references_are_errors(text: str) -> None:
    with pytest.raises(ReferenceError):
        Reference.parse(text)
