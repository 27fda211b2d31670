"""docker-py's exceptions, as ``kiln.api`` raises them.

Each is both a ``KilnError`` and the ``docker.errors`` class a docker-py script catches, so
``except docker.errors.ImageNotFound`` and ``except KilnError`` both work. Where docker-py's
error carries the engine's HTTP response, kiln's has none (``response`` is None): no engine
was asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker.errors

from kiln.errors import KilnError


class APIError(KilnError, docker.errors.APIError):
    """A store or registry failure, where docker-py reports the engine's refusal."""


class NotFound(APIError, docker.errors.NotFound):
    """Nothing by that name."""


class ImageNotFound(NotFound, docker.errors.ImageNotFound):
    """No image by that name or ID."""


class BuildError(KilnError, docker.errors.BuildError):
    """A failed build; ``build_log`` iterates over its log's entries (dicts), as docker-py's."""

    def __init__(self, reason: str, build_log: list[dict[str, Any]]) -> None:
        super().__init__(reason, iter(build_log))


class ImageLoadError(KilnError, docker.errors.ImageLoadError):
    """An archive that holds no image kiln can load."""


class InvalidArgument(KilnError, docker.errors.InvalidArgument):
    """An argument docker-py refuses too."""


@contextlib.contextmanager
def as_api_error() -> Iterator[None]:
    """kiln's own errors, in the block, raised as docker-py's ``APIError`` (with the same
    one-line message)."""
    try:
        yield
    except APIError:
        raise
    except KilnError as err:
        raise APIError(str(err)) from None
