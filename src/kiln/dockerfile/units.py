"""Go's duration and size notations, as Dockerfile flags write them (``30s``, ``64m``)."""

from __future__ import annotations

import re

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)*) ?([kKmMgGtTpP])?[iI]?[bB]?\Z")


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds: ``1h30m``, ``1.5s``, ``-2ms``, ``0``."""
    original = text
    sign = -1 if text.startswith("-") else 1
    text = text.removeprefix("-").removeprefix("+") if text[:1] in "+-" else text
    if text == "0":
        return 0
    if not text:
        raise ValueError(f"invalid duration {original!r}")
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None or match.group(1) in ("", "."):
            raise ValueError(f"invalid duration {original!r}")
        number, unit = match.groups()
        if unit not in _DURATION_UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {original!r}")
        total += float(number) * _DURATION_UNITS[unit]
        pos = match.end()
    return sign * round(total)


def format_duration(nanoseconds: int) -> str:
    """A duration the way Go prints it, for messages: ``30s``, ``1m30s``, ``500ms``."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(nanoseconds)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return f"{sign}{ns / size:g}{unit}"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = rest / 1_000_000_000
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{seconds:g}s"


def parse_size(text: str) -> int:
    """docker/go-units ``RAMInBytes``: ``64m``, ``1.5GiB``, ``512`` (k = 1024)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"invalid size: {text!r}")
    number, unit = match.groups()
    multiplier = 1024 ** ("kmgtp".index(unit.lower()) + 1) if unit else 1
    return int(float(number) * multiplier)
