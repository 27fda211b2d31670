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
