""".dockerignore patterns with moby/patternmatcher's semantics.

A pattern is cleaned like a path, may start with ``!`` (an exception that re-includes), and
uses Go's ``filepath.Match`` wildcards plus ``**`` for any number of directories. A path is
matched when it or one of its parent directories matches, and the last matching pattern wins.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kiln.errors import ContextError


class PatternError(ContextError):
    """A malformed pattern (Go's ``filepath.ErrBadPattern``)."""


def clean_path(path: str) -> str:
    """Go's ``filepath.Clean`` on Unix: no ``.``/``..``/double slashes; "" becomes ".".

    Unlike ``posixpath.normpath``, a leading ``//`` is folded to ``/``.
    """
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


# -- Go's filepath.Match ------------------------------------------------------------------------


def match_glob(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match``: ``*`` and ``?`` never match ``/``; PatternError if malformed."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing * matches the rest unless it has a /
        rest, ok = _match_chunk(chunk, name)
        # The last chunk must use up the name; otherwise a later star may still match.
        if ok and (not rest or pattern):
            name = rest
            continue
        skipped = _skip_to_match(chunk, pattern, name) if star else None
        if skipped is not None:
            name = skipped
            continue
        while pattern:  # no match, but the rest of the pattern must still be well formed
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


def _skip_to_match(chunk: str, pattern: str, name: str) -> str | None:
    """After a star: the rest of ``name`` once ``chunk`` matches further on, without a /."""
    for i in range(len(name)):
        if name[i] == "/":
            break
        rest, ok = _match_chunk(chunk, name[i + 1 :])
        if ok and (pattern or not rest):
            return rest
    return None


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif ch == "[":
            in_range = True
        elif ch == "]":
            in_range = False
        elif ch == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    """Match ``chunk`` (no ``*``) at the start of ``s``: (rest of s, matched)."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        head = chunk[0]
        if head == "[":
            char = ""
            if not failed:
                char, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = chunk.startswith("^")
            if negated:
                chunk = chunk[1:]
            matched = False
            ranges = 0
            while True:
                if chunk.startswith("]") and ranges > 0:
                    chunk = chunk[1:]
                    break
                low, chunk = _class_char(chunk)
                high = low
                if chunk[0] == "-":
                    high, chunk = _class_char(chunk[1:])
                if not failed and low <= char <= high:
                    matched = True
                ranges += 1
            if matched == negated:
                failed = True
        elif head == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if head == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise PatternError("syntax error in pattern: trailing backslash")
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return ("", False) if failed else (s, True)


def _class_char(chunk: str) -> tuple[str, str]:
    """One (possibly escaped) character of a ``[...]`` class, and what follows it."""
    if not chunk or chunk[0] in "-]":
        raise PatternError("syntax error in pattern: bad character class")
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise PatternError("syntax error in pattern: trailing backslash")
    char, rest = chunk[0], chunk[1:]
    if not rest:
        raise PatternError("syntax error in pattern: unterminated character class")
    return char, rest


# -- one .dockerignore pattern ------------------------------------------------------------------

_REGEX_SPECIAL = frozenset(".+()|{}$")
_PATTERN_CHARS = frozenset("*[]?^\\")


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern; ``exclusion`` is True for a ``!`` exception."""

    text: str
    exclusion: bool
    cleaned: str
    _regex: re.Pattern[str] | None = field(repr=False, compare=False)
    _kind: str = field(repr=False, compare=False)

    @classmethod
    def compile(cls, text: str) -> Pattern:
        pattern = clean_path(text.strip())
        exclusion = pattern.startswith("!")
        if exclusion:
            if pattern == "!":
                raise PatternError('illegal exclusion pattern: "!"')
            pattern = pattern[1:]
        match_glob(pattern, ".")  # syntax check, as patternmatcher does
        kind, regex = _compile(pattern)
        return cls(text, exclusion, pattern, regex, kind)

    def matches(self, path: str) -> bool:
        """Whether ``path`` itself (not its parents) matches."""
        if self._kind == "exact":
            return path == self.cleaned
        if self._kind == "prefix":
            return path.startswith(self.cleaned[:-2])
        if self._kind == "suffix":
            suffix = self.cleaned[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self._regex is not None
        return self._regex.match(path) is not None


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    """patternmatcher's translation of a pattern to a match kind and, if needed, a regex."""
    regex = "^"
    kind = "exact"
    i = 0
    first = True
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < len(pattern) and pattern[i] == "*":
                i += 1
                if i < len(pattern) and pattern[i] == "/":
                    i += 1
                if i >= len(pattern):
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex += ".*"
                        kind = "regex"
                else:
                    regex += "(.*/)?"
                    kind = "regex"
                if first:
                    kind = "suffix"
            else:
                regex += "[^/]*"
                kind = "regex"
        elif ch == "?":
            regex += "[^/]"
            kind = "regex"
        elif ch in _REGEX_SPECIAL:
            regex += "\\" + ch
        elif ch == "\\":
            if i < len(pattern):
                regex += "\\" + pattern[i]
                i += 1
                kind = "regex"
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = "regex"
        else:
            regex += ch
        first = False
    if kind != "regex":
        return kind, None
    try:
        return kind, re.compile(regex + "$")
    except re.error:
        raise PatternError(f"syntax error in pattern: {pattern}") from None


# -- a list of patterns -------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchInfo:
    """Which patterns matched a directory, so its children need not re-match its parents."""

    parent_matched: tuple[bool, ...] = ()


class PatternMatcher:
    """An ordered list of patterns; the last one that matches a path decides."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(Pattern.compile(p) for p in patterns if p.strip())
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """True when ``path`` is excluded: it or a parent matches, exceptions applied."""
        path = clean_path(path)
        parents = _parents(path)
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.matches(path) or any(pattern.matches(p) for p in parents):
                matched = not pattern.exclusion
        return matched

    def match_in_dir(self, path: str, parent: MatchInfo) -> tuple[bool, MatchInfo]:
        """``matches`` for a walker: ``parent`` is what the same call gave the parent dir."""
        if not parent.parent_matched:
            parent = MatchInfo((False,) * len(self.patterns))
            parents = _parents(path)
        else:
            parents = []
        matched = False
        results = []
        for pattern, parent_hit in zip(self.patterns, parent.parent_matched, strict=True):
            # Every hit is recorded (not only those that change the decision), so that the
            # children's answers stay exact; the decision itself is the same as ``matches``.
            hit = parent_hit or pattern.matches(path) or any(pattern.matches(p) for p in parents)
            results.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, MatchInfo(tuple(results))

    def may_include_under(self, directory: str) -> bool:
        """Must a walker descend into ``directory`` although it is excluded?

        BuildKit's rule: when every exception is a plain path (wildcards allowed only as a
        trailing ``/*`` or ``/**``), only if one of them lies below the directory; when any
        exception has a wildcard, always. Combined with exact matching, pruning never
        drops a file an exception brings back.
        """
        exceptions = [_without_trailing_glob(p.cleaned) for p in self.patterns if p.exclusion]
        if any(_PATTERN_CHARS & set(text) for text in exceptions):
            return True
        below = clean_path(directory) + "/"
        return any((text + "/").startswith(below) for text in exceptions)


def _without_trailing_glob(pattern: str) -> str:
    return pattern.removesuffix("/**").removesuffix("/*")


def _parents(path: str) -> list[str]:
    """``a``, ``a/b`` for ``a/b/c``: the parent directories, outermost first."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
