"""What the API tests share besides fixtures."""

from __future__ import annotations

from pathlib import Path


def context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    """A build context directory: the Dockerfile and ``files``."""
    root = tmp_path / "ctx"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        (root / name).write_text(content)
    return root
