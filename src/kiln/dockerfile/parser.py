"""Dockerfile text to a syntax tree, line for line as BuildKit's parser does it.

The parser knows lines, not meanings: parser directives, comments, line continuations with
either escape character, the split of each instruction into keyword, ``--flags`` and
arguments (by the keyword's argument grammar: JSON or shell form, ``key=value`` lists...),
and heredocs. Every node keeps the lines it came from. ``Node.dump`` prints BuildKit's AST
dump format, which the conformance tests compare with BuildKit's own golden files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from kiln.dockerfile.directives import DirectiveParser, ParserDirectives
from kiln.dockerfile.gostr import go_quote, go_quote_list
from kiln.dockerfile.heredoc import Heredoc, heredocs_in_line
from kiln.dockerfile.line_parsers import ArgumentParseError, parse_arguments
from kiln.dockerfile.shell import ShellError, is_space
from kiln.errors import DockerfileError

# Instructions whose arguments may introduce heredocs (ONBUILD may wrap one of them).
_HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})
_INSTRUCTION_SPLIT = re.compile(r"[\t\v\f\r ]+")
_BOM = "\ufeff"


@dataclass
class Node:
    """One instruction as written.

    ``keyword`` keeps the case it was written in; ``args`` are the arguments after the
    keyword's own grammar (a JSON array's elements, ``key``/``value``/``=`` triples for
    ENV and LABEL, ...); ``trigger`` is the instruction an ONBUILD wraps.
    """

    keyword: str
    args: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    json: bool = False
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    heredocs: list[Heredoc] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    trigger: Node | None = None

    @property
    def name(self) -> str:
        """The keyword, lower-cased: what decides the instruction's meaning."""
        return self.keyword.lower()

    def dump(self) -> str:
        """BuildKit's ``Node.Dump`` rendering: ``run ["--mount=..."] "echo hi"``."""
        parts = [self.name]
        if self.flags:
            parts.append(go_quote_list(self.flags))
        if self.trigger is not None:
            parts.append(f"({self.trigger.dump()})")
        parts.extend(go_quote(arg) for arg in self.args)
        return " ".join(parts).strip()


@dataclass
class ParseResult:
    """The parse of one Dockerfile."""

    nodes: list[Node]
    directives: ParserDirectives
    warnings: list[ParseWarning]

    @property
    def escape(self) -> str:
        return self.directives.escape

    def dump(self) -> str:
        """Every node in BuildKit's dump format, one per line."""
        return "".join(f"({node.dump()})\n" for node in self.nodes)


@dataclass(frozen=True)
class ParseWarning:
    """Something legal but suspicious, such as an empty line inside a continuation."""

    line: int
    message: str


_EMPTY_CONTINUATION = "empty continuation line (it will become an error in a future release)"


def parse(text: str, *, file: str = "Dockerfile") -> ParseResult:
    """Parse Dockerfile ``text``; errors are ``DockerfileError`` naming ``file`` and a line."""
    try:
        return _Parser(text).parse()
    except DockerfileError as err:
        raise err.in_file(file) from None


def _trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


def _lstrip_space(text: str) -> str:
    i = 0
    while i < len(text) and is_space(text[i]):
        i += 1
    return text[i:]


def _strip_space(text: str) -> str:
    text = _lstrip_space(text)
    end = len(text)
    while end and is_space(text[end - 1]):
        end -= 1
    return text[:end]


def _is_comment(line: str) -> bool:
    return _lstrip_space(line).startswith("#")


def split_lines(text: str) -> Iterator[str]:
    """Lines with their endings kept, as BuildKit's scanner yields them (split on \\n)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


class _Parser:
    def __init__(self, text: str) -> None:
        self.lines = split_lines(text.removeprefix(_BOM))
        self.line_no = 0
        self.directives = DirectiveParser()
        self.warnings: list[ParseWarning] = []

    def next_line(self) -> str | None:
        line = next(self.lines, None)
        if line is not None:
            self.line_no += 1
        return line

    def process_line(self, raw: str, strip_left: bool) -> tuple[str, bool]:
        """Trim the line, feed it to the directive parser, blank it out if a comment."""
        token = _trim_newline(raw)
        if strip_left:
            token = _lstrip_space(token)
        try:
            is_directive = self.directives.feed(token)
        except DockerfileError as err:
            err.line = err.end_line = self.line_no
            raise
        return ("" if _is_comment(token) else token), is_directive

    def parse(self) -> ParseResult:
        nodes: list[Node] = []
        comments: list[str] = []
        while (raw := self.next_line()) is not None:
            if _is_comment(raw):
                comment = _strip_space(_lstrip_space(_trim_newline(raw))[1:])
                if comment:
                    comments.append(comment)
                else:
                    comments = []
            line, is_directive = self.process_line(raw, strip_left=True)
            if is_directive and comments:
                comments.pop()
            start = self.line_no
            line, at_end = self.directives.trim_continuation(line)
            if at_end and not line:
                continue
            pieces = [line]
            has_empty_line = False
            while not at_end and (raw := self.next_line()) is not None:
                piece, _ = self.process_line(raw, strip_left=False)
                if _is_comment(raw):
                    continue
                if not _lstrip_space(piece):
                    has_empty_line = True
                    continue
                piece, at_end = self.directives.trim_continuation(piece)
                pieces.append(piece)
            line = "".join(pieces)
            if has_empty_line:
                self.warnings.append(ParseWarning(self.line_no, _EMPTY_CONTINUATION))
            try:
                node = _node_from_line(line, self.directives.escape, comments)
            except ArgumentParseError as err:
                raise DockerfileError(str(err), line=start, end_line=self.line_no) from None
            if _may_contain_heredoc(node) and "<<" in line:
                node.heredocs = self.read_heredocs(line, start)
            node.start_line, node.end_line = start, self.line_no
            nodes.append(node)
            comments = []
        if not nodes:
            raise DockerfileError("file with no instructions")
        return ParseResult(nodes, self.directives.result(), self.warnings)

    def read_heredocs(self, line: str, start: int) -> list[Heredoc]:
        try:
            docs = heredocs_in_line(line)
        except ShellError as err:
            raise DockerfileError(str(err), line=start, end_line=self.line_no) from None
        for doc in docs:
            body: list[str] = []
            while (raw := self.next_line()) is not None:
                candidate = _trim_newline(raw)
                if doc.chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == doc.name:
                    break
                body.append(raw)
            else:
                raise DockerfileError(
                    f"unterminated heredoc <<{doc.name}: no line {doc.name!r} closes it",
                    line=start,
                    end_line=self.line_no,
                )
            doc.content = "".join(body)
        return docs


def _node_from_line(line: str, escape: str, comments: list[str]) -> Node:
    keyword, flags, rest = split_command(line)
    args, is_json, trigger = parse_arguments(keyword.lower(), rest, escape)
    if trigger is not None:
        trigger_node = _node_from_line(trigger, escape, [])
        return Node(keyword, [], flags, False, line, comments=list(comments), trigger=trigger_node)
    return Node(keyword, args, flags, is_json, line, comments=list(comments))


def _may_contain_heredoc(node: Node) -> bool:
    target = node.trigger if node.name == "onbuild" and node.trigger is not None else node
    return target.name in _HEREDOC_INSTRUCTIONS and not target.json


def split_command(line: str) -> tuple[str, list[str], str]:
    """The keyword, its ``--flags`` and the rest of an instruction line."""
    parts = _INSTRUCTION_SPLIT.split(_strip_space(line), maxsplit=1)
    if len(parts) < 2:
        return parts[0], [], ""
    rest, flags = _extract_flags(parts[1])
    return parts[0], flags, _strip_space(rest)


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Leading ``--name[=value]`` words; quotes and ``\\`` escapes work inside them."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    in_word = in_quote = blank_ok = False
    pos = 0
    n = len(line)
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if not in_word and not in_quote:
            if pos == n:
                break
            if is_space(ch):
                pos += 1
                continue
            if not line.startswith("--", pos):
                return line[pos:], words
            in_word = True
        if pos == n:
            text = "".join(word)
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if in_quote:
            if ch == quote:
                in_quote, in_word = False, True
            else:
                if ch == "\\":
                    if pos + 1 == n:
                        in_quote, in_word = False, True
                        pos += 1
                        continue
                    pos += 1
                    ch = line[pos]
                word.append(ch)
            pos += 1
            continue
        if is_space(ch):
            text = "".join(word)
            if text == "--":
                return line[pos:], words
            if blank_ok or text:
                words.append(text)
            word, blank_ok, in_word = [], False, False
            pos += 1
            continue
        if ch in "'\"":
            quote, blank_ok, in_quote, in_word = ch, True, True, False
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word.append(ch)
        pos += 1
    return "", words
