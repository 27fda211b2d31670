"""Parser directives: ``# syntax=``, ``# escape=``, ``# check=`` at the top of a Dockerfile.

A directive counts only in the unbroken run of directive lines that opens the file: the
first line that is anything else (an instruction, a blank line, an ordinary comment, an
unknown directive) ends the run, and later lines that look like directives are comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kiln.errors import DockerfileError

# Go's \s is [\t\n\f\r ]; Python's would also match \v and Unicode spaces.
_SPACE = r"[\t\n\f\r ]*"
_DIRECTIVE = re.compile(rf"#{_SPACE}([a-zA-Z][a-zA-Z0-9]*){_SPACE}={_SPACE}(.+?){_SPACE}\Z")
_KNOWN = ("syntax", "escape", "check")


@dataclass(frozen=True)
class Directive:
    name: str
    value: str
    line: int


@dataclass(frozen=True)
class ParserDirectives:
    """The directives a Dockerfile set; ``escape`` is ``\\`` unless it chose `` ` ``."""

    escape: str = "\\"
    syntax: Directive | None = None
    check: Directive | None = None


class DirectiveParser:
    """Fed every line in order; tracks the escape character the rest of the file uses."""

    def __init__(self) -> None:
        self.line = 0
        self.done = False
        self.found: dict[str, Directive] = {}
        self.escape = "\\"
        self._continuation = _continuation_regex(self.escape)

    def feed(self, line: str) -> bool:
        """Consider one line (trimmed of its newline); True if it was a directive."""
        self.line += 1
        if self.done:
            return False
        match = _DIRECTIVE.match(line)
        name = match.group(1).lower() if match else ""
        if match is None or name not in _KNOWN:
            self.done = True
            return False
        if name in self.found:
            raise DockerfileError(f"only one {name} parser directive can be used", line=self.line)
        value = match.group(2)
        if name == "escape":
            if value not in ("`", "\\"):
                raise DockerfileError(
                    f"invalid escape token '{value}' does not match ` or \\", line=self.line
                )
            self.escape = value
            self._continuation = _continuation_regex(value)
        self.found[name] = Directive(name, value, self.line)
        return True

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Strip a trailing escape character; ``(line, True)`` when the line ends here."""
        match = self._continuation.search(line)
        if match is None:
            return line, True
        return line[: match.start()] + (match.group(1) or ""), False

    def result(self) -> ParserDirectives:
        return ParserDirectives(
            escape=self.escape, syntax=self.found.get("syntax"), check=self.found.get("check")
        )


def _continuation_regex(escape: str) -> re.Pattern[str]:
    # The escape character is a continuation when it ends the line, unless it is itself
    # escaped (BuildKit checks only the one character before it, and so does kiln).
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")
