"""kiln: turn a Dockerfile and its context into a container image, with no daemon."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from kiln.errors import ContextError, DockerfileError, KilnError

try:
    __version__ = version("kiln")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["ContextError", "DockerfileError", "KilnError", "__version__"]
