""".dockerignore files: which one applies, how it reads, and which line excluded a path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kiln.context.patterns import Pattern, PatternError, PatternMatcher, clean_path
from kiln.errors import ContextError

_BOM = "\ufeff"


@dataclass(frozen=True)
class IgnorePattern:
    """One pattern as ``ReadAll`` normalises it, with the line it came from."""

    text: str
    line: int


def read_ignore_patterns(text: str) -> list[IgnorePattern]:
    """moby's ``ignorefile.ReadAll``: ``#`` lines are comments, blanks are skipped, each
    pattern is trimmed and cleaned, and a leading ``/`` is dropped (``!`` kept in front)."""
    patterns = []
    for number, line in enumerate(text.splitlines(), 1):
        if number == 1:
            line = line.removeprefix(_BOM)
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean_path(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append(IgnorePattern("!" + pattern if invert else pattern, number))
    return patterns


def find_ignore_file(context: Path, dockerfile: Path | None = None) -> Path | None:
    """``<Dockerfile-name>.dockerignore`` beside the Dockerfile wins over the context's own."""
    if dockerfile is not None:
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    default = context / ".dockerignore"
    return default if default.is_file() else None


@dataclass(frozen=True)
class IgnoreRules:
    """The patterns of one ignore file, compiled, with where each came from."""

    file: Path
    patterns: tuple[IgnorePattern, ...]
    matcher: PatternMatcher = field(repr=False)

    def excludes(self, path: str) -> bool:
        """Whether ``path`` (relative to the context) is left out of the build context."""
        return self.matcher.matches(path)

    def describe(self, path: str) -> str:
        """``FILE:LINE`` of the pattern that decides ``path``'s exclusion."""
        deciding = self.deciding_pattern(path)
        return f"{self.file}:{deciding.line}" if deciding else str(self.file)

    def deciding_pattern(self, path: str) -> IgnorePattern | None:
        """The last pattern that excluded ``path`` (None when it is not excluded)."""
        parents = path.split("/")
        candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        deciding: IgnorePattern | None = None
        for source, pattern in zip(self.patterns, self.matcher.patterns, strict=True):
            if (deciding is None) != (not pattern.exclusion):
                continue
            if any(pattern.matches(candidate) for candidate in candidates):
                deciding = None if pattern.exclusion else source
        return deciding


def load_ignore(context: Path, dockerfile: Path | None = None) -> IgnoreRules | None:
    """The ignore rules for a build, or None when there is no ignore file."""
    file = find_ignore_file(context, dockerfile)
    if file is None:
        return None
    try:
        text = file.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as err:
        raise ContextError(f"{file}: cannot read ignore file: {err.strerror}") from None
    patterns = read_ignore_patterns(text)
    for pattern in patterns:
        try:
            Pattern.compile(pattern.text)
        except PatternError as err:
            raise ContextError(f"{file}:{pattern.line}: {pattern.text!r}: {err}") from None
    matcher = PatternMatcher([p.text for p in patterns])
    return IgnoreRules(file, tuple(patterns), matcher)
