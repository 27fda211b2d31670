"""Heredocs: ``RUN <<EOF``, ``COPY <<-'EOT' /dest`` and their bodies.

A heredoc word is ``[fd]<<[-]NAME``; quoting any part of NAME turns expansion of the body
off, and ``<<-`` strips leading tabs from the body and from the terminator line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kiln.dockerfile.shell import ShellError, ShellLex

_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)

# The name is lexed with and without its quotes: if the two differ, part of it was quoted.
_NAME_LEX = ShellLex(skip_unset_env=True)
_RAW_NAME_LEX = ShellLex(raw_quotes=True, skip_unset_env=True)
# Lines are scanned for heredoc words with everything kept as written.
_LINE_LEX = ShellLex(raw_quotes=True, raw_escapes=True, skip_unset_env=True)


@dataclass
class Heredoc:
    name: str
    file_descriptor: int = 0
    expand: bool = True
    chomp: bool = False
    content: str = ""

    @property
    def body(self) -> str:
        """The content as the build uses it: leading tabs removed for ``<<-``."""
        return chomp(self.content) if self.chomp else self.content


def parse_heredoc(word: str) -> Heredoc | None:
    """The heredoc a word introduces, or None; ``ShellError`` for ``<<'EOF`` and kin."""
    match = _HEREDOC_WORD.match(word)
    if match is None or not match.group(3):
        return None
    fd, dash, rest = match.groups()
    words = _NAME_LEX.process_words(rest, {})
    if len(words) != 1:
        return None
    raw_words = _RAW_NAME_LEX.process_words(rest, {})
    if len(raw_words) != len(words):
        raise ShellError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name, raw = words[0], raw_words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw.count("'") + raw.count('"')
    return Heredoc(
        name=name,
        file_descriptor=int(fd) if fd else 0,
        expand=quotes == raw_quotes,
        chomp=dash == "-",
    )


def heredocs_in_line(line: str) -> list[Heredoc]:
    """Every heredoc an instruction line opens, in order; their bodies follow the line."""
    try:
        words = _LINE_LEX.process_words(line, {})
    except ShellError:
        return []  # BuildKit ignores lines it cannot lex here: no heredocs
    docs = []
    for word in words:
        doc = parse_heredoc(word)
        if doc is not None:
            docs.append(doc)
    return docs


def chomp(content: str) -> str:
    """Strip leading tabs from every line, as ``<<-`` asks."""
    return _LEADING_TABS.sub("", content)
