"""Where the shared conformance data lives, and a clear skip when it is not there."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFORMANCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance"


def conformance_path(*parts: str) -> Path:
    """A path inside ``../shared/conformance``; skips the test when the folder is absent."""
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"{path} not present: the conformance data is shared beside the project root "
            "(../shared/conformance), see README.md"
        )
    return path
