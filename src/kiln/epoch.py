"""``SOURCE_DATE_EPOCH``: the one time a reproducible build may record.

As in BuildKit (and Docker Buildx, which passes the environment variable on as a build arg),
the value comes from ``--build-arg SOURCE_DATE_EPOCH=N`` or, failing that, from kiln's
environment; an empty value means unset. See https://reproducible-builds.org/specs/source-date-epoch/.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping

from kiln.errors import KilnError

NAME = "SOURCE_DATE_EPOCH"
_LATEST = 253402300799  # 9999-12-31T23:59:59Z, the last time RFC 3339 can write


class EpochError(KilnError):
    """A SOURCE_DATE_EPOCH that is not a whole number of seconds."""


def source_date_epoch(build_args: Mapping[str, str] | None = None) -> int | None:
    """The epoch the build arg gives, else the environment's; ``None`` when neither does."""
    if build_args is not None and NAME in build_args:
        return _parse(build_args[NAME], "--build-arg")
    return _parse(os.environ.get(NAME, ""), "the environment")


def rfc3339(seconds: int) -> str:
    """``seconds`` as Go writes a whole-second ``time.Time`` (``2023-11-14T22:13:20Z``)."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str, origin: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > _LATEST:
        raise EpochError(
            f"{NAME}={value!r} (from {origin}) is not a whole number of seconds since 1970"
        )
    return int(value)
