"""``--name[=value]`` flags of an instruction, checked against what it accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from kiln.dockerfile.suggest import closest


class FlagKind(Enum):
    BOOL = "bool"
    STRING = "string"
    STRINGS = "strings"  # may repeat; every value is kept


class FlagError(ValueError):
    """A flag the instruction does not accept, or a value of the wrong shape."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class Flags:
    """The declared flags of one instruction and the values found for them."""

    raw: list[str]
    kinds: dict[str, FlagKind] = field(default_factory=dict)
    values: dict[str, list[str]] = field(default_factory=dict)

    def declare(self, name: str, kind: FlagKind) -> None:
        self.kinds[name] = kind

    def parse(self) -> None:
        """Match the written flags with the declared ones; errors name the flag."""
        for arg in self.raw:
            if not arg.startswith("--"):
                raise FlagError(f"Arg should start with -- : {arg}")
            if arg == "--":
                return
            name, has_value, value = arg[2:].partition("=")
            kind = self.kinds.get(name)
            if kind is None:
                suggestion = closest(name, list(self.kinds))
                raise FlagError(
                    f"unknown flag: --{name}",
                    hint=f"did you mean --{suggestion}?" if suggestion else None,
                )
            if name in self.values and kind is not FlagKind.STRINGS:
                raise FlagError(f"duplicate flag specified: --{name}")
            if kind is FlagKind.BOOL:
                if has_value and not value:
                    raise FlagError(f"missing a value on flag: --{name}")
                lowered = value.lower()
                if lowered not in ("", "true", "false"):
                    raise FlagError(f"expecting boolean value for flag --{name}, not: {value}")
                value = lowered or "true"
            elif not has_value:
                raise FlagError(f"missing a value on flag: --{name}")
            self.values.setdefault(name, []).append(value)

    def used(self, name: str) -> bool:
        return name in self.values

    def string(self, name: str, default: str = "") -> str:
        return self.values.get(name, [default])[-1]

    def strings(self, name: str) -> tuple[str, ...]:
        return tuple(self.values.get(name, []))

    def boolean(self, name: str) -> bool:
        return self.values.get(name, ["false"])[-1] == "true"

    def optional_boolean(self, name: str) -> bool | None:
        """True/False when the flag was written, None when it was not."""
        return self.boolean(name) if name in self.values else None
