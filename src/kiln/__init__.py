"""kiln: turn a Dockerfile and its context into a container image, with no daemon."""

from __future__ import annotations

from kiln.errors import ContextError, DockerfileError, KilnError

__version__ = "0.1.0"  # the single source: pyproject.toml reads it

__all__ = ["ContextError", "DockerfileError", "KilnError", "__version__"]
