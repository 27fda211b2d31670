"""``RUN --mount=type=...,key=value`` specifications.

A mount is written as CSV fields. Its values may use build variables, so the full parse
happens when the step is expanded; at parse time only the CSV shape and the one rule that
does not depend on variables (``from`` cannot use them) are checked, as BuildKit does.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kiln.dockerfile.suggest import closest
from kiln.dockerfile.units import parse_size

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size",
    "mode", "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)  # fmt: skip
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class MountError(ValueError):
    """A mount specification that cannot be used."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Mount:
    """One ``--mount``. ``env`` names the variable a secret is exposed as, if any."""

    type: str = "bind"
    source: str = ""
    target: str = ""
    from_: str = ""
    readonly: bool = True
    cache_id: str = ""
    sharing: str = ""
    required: bool = False
    size_limit: int = 0
    env: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


def _fields(spec: str) -> list[str]:
    try:
        rows = list(csv.reader([spec], strict=True))
    except csv.Error as err:
        raise MountError(f"failed to parse csv mounts: {err}") from None
    return rows[0] if rows else []


def check_mount_syntax(spec: str) -> None:
    """What can be checked before variables are known."""
    for field in _fields(spec):
        key, has_value, value = field.partition("=")
        if has_value and key.lower() == "from" and "$" in value[:-1]:
            raise MountError(
                "'from' doesn't support variable expansion, define alias stage instead"
            )


def _parse_bool(key: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise MountError(f"invalid value for {key}: {value}")


def _parse_uint(key: str, value: str, base: int) -> int:
    """Go's ``strconv.ParseUint(value, base, 32)``: plain digits only."""
    try:
        number = int(value, base) if value.isascii() and value.isdigit() else -1
    except ValueError:
        number = -1
    if not 0 <= number < 2**32:
        raise MountError(f"invalid value {value} for {key}")
    return number


def parse_mount(spec: str, expand: Callable[[str], str]) -> Mount:
    """The mount ``spec`` describes, its values expanded with ``expand``."""
    mount = Mount()
    readonly_set = False
    for field in _fields(spec):
        raw_key, has_value, raw_value = field.partition("=")
        key = raw_key.lower()
        if not has_value:
            if key in ("readonly", "ro", "readwrite", "rw"):
                mount, readonly_set = replace(mount, readonly=key in ("readonly", "ro")), True
            elif key == "required":
                _require_type(key, mount, ("secret", "ssh"))
                mount = replace(mount, required=True)
            else:
                raise MountError(f"invalid field '{field}' must be a key=value pair")
            continue
        mount, readonly_set = _apply(mount, readonly_set, key, field, expand(raw_value))
    return _validated(mount, readonly_set)


def _require_type(key: str, mount: Mount, types: tuple[str, ...]) -> None:
    if mount.type not in types:
        raise MountError(f"unexpected key '{key}' for mount type '{mount.type}'")


def _apply(
    mount: Mount, readonly_set: bool, key: str, field: str, value: str
) -> tuple[Mount, bool]:
    """One ``key=value`` field applied to the mount so far."""
    if key == "type":
        kind = value.lower()
        if kind not in MOUNT_TYPES:
            suggestion = closest(value, MOUNT_TYPES)
            raise MountError(
                f"unsupported mount type {value!r}",
                hint=f"did you mean {suggestion}?" if suggestion else None,
            )
        return replace(mount, type=kind), readonly_set
    if key in ("readonly", "ro"):
        return replace(mount, readonly=_parse_bool(key, value)), True
    if key in ("readwrite", "rw"):
        return replace(mount, readonly=not _parse_bool(key, value)), True
    if key == "required":
        _require_type(key, mount, ("secret", "ssh"))
        return replace(mount, required=_parse_bool(key, value)), readonly_set
    if key == "size":
        _require_type(key, mount, ("tmpfs",))
        try:
            return replace(mount, size_limit=parse_size(value)), readonly_set
        except ValueError:
            raise MountError(f"invalid value for {key}: {value}") from None
    if key == "sharing":
        if value.lower() not in SHARING_MODES:
            suggestion = closest(value, SHARING_MODES)
            raise MountError(
                f"unsupported sharing value {value!r}",
                hint=f"did you mean {suggestion}?" if suggestion else None,
            )
        return replace(mount, sharing=value.lower()), readonly_set
    if key == "mode":
        return replace(mount, mode=_parse_uint(key, value, 8)), readonly_set
    if key == "uid":
        return replace(mount, uid=_parse_uint(key, value, 10)), readonly_set
    if key == "gid":
        return replace(mount, gid=_parse_uint(key, value, 10)), readonly_set
    attribute = _TEXT_KEYS.get(key)
    if attribute is None:
        suggestion = closest(key, _KEYS)
        raise MountError(
            f"unexpected key '{key}' in '{field}'",
            hint=f"did you mean {suggestion}?" if suggestion else None,
        )
    changes: dict[str, Any] = {attribute: value}
    return replace(mount, **changes), readonly_set


_TEXT_KEYS = {
    "from": "from_",
    "source": "source",
    "src": "source",
    "target": "target",
    "dst": "target",
    "destination": "target",
    "id": "cache_id",
    "env": "env",
}


def _validated(mount: Mount, readonly_set: bool) -> Mount:
    if mount.type not in ("secret", "ssh", "cache"):
        for name, value in (("mode", mount.mode), ("uid", mount.uid), ("gid", mount.gid)):
            if value is not None:
                raise MountError(f"{name} not allowed for {mount.type!r} type mounts")
    if not readonly_set:
        mount = replace(mount, readonly=mount.type not in ("cache", "tmpfs"))
    if mount.type == "secret":
        if mount.from_:
            raise MountError("secret mount should not have a from")
        if mount.sharing:
            raise MountError("secret mount should not define sharing")
        if not (mount.source or mount.target or mount.cache_id):
            raise MountError("invalid secret mount. one of source, target required")
        if mount.source and mount.cache_id:
            raise MountError("both source and id can't be set")
    if mount.sharing and mount.type != "cache":
        raise MountError(f"invalid cache sharing set for {mount.type} mount")
    return mount
