"""Variable expansion and word splitting with BuildKit's shell-lexer semantics.

A Dockerfile is not run through a shell, yet ``ENV``, ``COPY``, ``WORKDIR`` and friends
expand ``$VAR`` and ``${VAR:-default}`` the way BuildKit's lexer does: quotes are removed,
the escape character (``\\`` or the ``# escape=`` one) escapes, and a handful of POSIX
parameter expansions are supported. This module is that lexer; it knows nothing of
instructions, only of words and an environment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kiln.dockerfile.gostr import go_quote
from kiln.errors import KilnError

# Go's unicode.IsSpace: the Latin-1 spaces plus the Unicode White_Space property. Python's
# str.isspace() differs (it also counts \x1c-\x1f), and word splitting must match Go's.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


def is_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace`` for one character."""
    return ch in _SPACES


class ShellError(KilnError):
    """A word could not be expanded: a bad substitution, an unterminated quote."""


@dataclass
class Expansion:
    """What expanding one word produced, and which variables it looked up."""

    result: str
    words: list[str]
    matched: set[str] = field(default_factory=set)
    unmatched: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ShellLex:
    """A configured lexer; cheap to create, safe to share.

    ``raw_quotes`` keeps quote characters in the output, ``raw_escapes`` keeps escape
    characters, ``skip_process_quotes`` treats quotes as ordinary characters and
    ``skip_unset_env`` leaves references to unset variables as written. The heredoc
    detector and the build-step display names need those variants.
    """

    escape: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_process_quotes: bool = False
    skip_unset_env: bool = False

    def expand(self, word: str, env: Mapping[str, str]) -> Expansion:
        """Expand ``word`` in ``env``; raises ``ShellError`` on a syntax error."""
        return _Scanner(self, word, env).run()

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """The expanded word as one string (spaces between words kept)."""
        return self.expand(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """The expanded word split into fields, as a list argument is."""
        return self.expand(word, env).words


class _Words:
    """Collects fields: unquoted spaces split, quoted and escaped characters do not."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if is_space(ch):
            if self.in_word and any(self.buf):
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.buf.append(text)
        self.in_word = True

    def finish(self) -> list[str]:
        if self.buf:
            word = "".join(self.buf)
            if word:
                self.words.append(word)
            self.buf = []
            self.in_word = False
        return self.words


class _Scanner:
    """One expansion of one word: a cursor over its characters."""

    def __init__(self, lex: ShellLex, text: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.text = text
        self.pos = 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def run(self) -> Expansion:
        try:
            result, words = self.process_until(None, self.raw_escapes)
        except ShellError as err:
            raise ShellError(f"failed to process {go_quote(self.text)}: {err}") from None
        return Expansion(result, words, self.matched, self.unmatched)

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def next(self) -> str | None:
        if self.pos < len(self.text):
            self.pos += 1
            return self.text[self.pos - 1]
        return None

    def process_until(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        """Process up to ``stop`` (consumed) or the end of the text."""
        handlers: dict[str, Callable[[], str]] = {
            "$": self.process_dollar,
            "<": self.process_possible_heredoc,
        }
        if not self.lex.skip_process_quotes:
            handlers["'"] = self.process_single_quote
            handlers['"'] = self.process_double_quote
        saved_raw_escapes, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            result: list[str] = []
            words = _Words()
            while (ch := self.peek()) is not None:
                if stop is not None and ch == stop:
                    self.next()
                    return "".join(result), words.finish()
                handler = handlers.get(ch)
                if handler is not None:
                    piece = handler()
                    result.append(piece)
                    if ch == "$":
                        words.add_string(piece)
                    else:
                        words.add_raw_string(piece)
                    continue
                self.next()
                if ch == self.lex.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    escaped = self.next()
                    if escaped is None:
                        break
                    words.add_raw_char(escaped)
                    result.append(escaped)
                else:
                    words.add_char(ch)
                    result.append(ch)
            if stop is not None:
                raise ShellError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.finish()
        finally:
            self.raw_escapes = saved_raw_escapes

    def process_possible_heredoc(self) -> str:
        # ``<<  EOF`` and ``<<- EOF`` are one word: blanks after the arrows join the delimiter.
        self.next()
        if self.peek() != "<":
            return "<"
        self.next()
        start = self.pos
        if self.peek() == "-":
            self.next()
        while (ch := self.peek()) is not None and ch in " \t":
            self.next()
        return "<<" + self.text[start : self.pos]

    def process_single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        quote = self.next()
        out = [quote] if self.lex.raw_quotes and quote else []
        while True:
            ch = self.next()
            if ch is None:
                raise ShellError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def process_double_quote(self) -> str:
        # Literal except $ expansions; the escape character escapes only " $ and itself.
        quote = self.next()
        out = [quote] if self.lex.raw_quotes and quote else []
        while True:
            ch = self.peek()
            if ch is None:
                raise ShellError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.process_dollar())
                continue
            self.next()
            if ch == self.lex.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following is None:
                    continue
                if following in ('"', "$", self.lex.escape):
                    ch = following
                    self.next()
            out.append(ch)

    def process_dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.lex.skip_unset_env else ""
            return value

        self.next()  # the {
        ch = self.peek()
        if ch is None:
            raise ShellError("syntax error: missing '}'")
        if ch in "{}:":
            raise ShellError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        modifier = ch or ""
        null_is_unset = False

        if ch == "}":
            value = self.lookup(name)
            if value is None:
                return f"${{{name}}}" if self.lex.skip_unset_env else ""
            return value
        if ch == ":":
            # ${name:op...}: the operator follows, and an empty value counts as unset.
            null_is_unset = True
            ch = self.next()
            modifier += ch or ""
            return self._parameter_operation(name, ch, modifier, null_is_unset)
        if ch is not None and ch in "+-?#%":
            return self._parameter_operation(name, ch, modifier, null_is_unset)
        if ch == "/":
            return self._substitution(name)
        raise ShellError(f"unsupported modifier ({modifier}) in substitution")

    def _parameter_operation(
        self, name: str, op: str | None, modifier: str, null_is_unset: bool
    ) -> str:
        """``${name:-w}``, ``${name+w}``, ``${name?w}``, ``${name#p}``, ``${name%%p}``..."""
        trims = op in ("#", "%")
        if null_is_unset and trims:
            raise ShellError(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self.process_until("}", trims)
        except ShellError:
            if self.peek() is None:
                raise ShellError("syntax error: missing '}'") from None
            raise
        value = self.lookup(name)
        if value is None and self.lex.skip_unset_env:
            return f"${{{name}{modifier}{word}}}"
        is_null = value is None or (null_is_unset and value == "")
        if op == "-":
            return word if is_null else str(value)
        if op == "+":
            return "" if is_null else word
        if op == "?":
            if value is None:
                raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise ShellError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if op in ("#", "%"):
            greedy = word.startswith(op)
            if greedy:
                word = word[1:]
            if op == "%":
                return _trim_suffix(word, value or "", greedy)
            return _trim_prefix(word, value or "", greedy)
        raise ShellError(f"unsupported modifier ({modifier}) in substitution")

    def _substitution(self, name: str) -> str:
        """``${name/pattern/replacement}`` and ``${name//pattern/replacement}``."""
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.process_until("/", True)
        except ShellError:
            if self.peek() is None:
                raise ShellError("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.process_until("}", True)
        except ShellError:
            if self.peek() is None:
                raise ShellError("syntax error: missing '}'") from None
            raise
        value = self.lookup(name)
        if value is None and self.lex.skip_unset_env:
            return f"${{{name}/{pattern}/{replacement}}}"
        value = value or ""
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return _go_replace_all(regex, value, _go_template(replacement))
        match = regex.search(value)
        if match:
            value = value[: match.start()] + replacement + value[match.end() :]
        return value

    def process_name(self) -> str:
        """A variable name: letters, digits and _, or all digits, or one special char."""
        name: list[str] = []
        while (ch := self.peek()) is not None:
            if not name and ch.isdecimal():
                while (digit := self.peek()) is not None and digit.isdecimal():
                    name.append(digit)
                    self.next()
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                self.next()
                return ch
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name.append(ch)
            self.next()
        return "".join(name)

    def lookup(self, name: str) -> str | None:
        value = self.env.get(name)
        (self.unmatched if value is None else self.matched).add(name)
        return value


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell wildcard pattern (``*``, ``?``, escapes; no brackets) as a regex."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/"):
                continue  # escapes a ${} delimiter, not part of the pattern
            if following not in ("*", "?", "\\"):
                raise ShellError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'"
                )
            out.append("\\" + following)
            i += 1
        elif ch in "[]{}.+()|^$":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern but keep each escape in front of the character it escapes."""
    units: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            units.append(pattern[i : i + 2])
            i += 2
        else:
            units.append(pattern[i])
            i += 1
    return "".join(reversed(units))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex finds leftmost matches only, so match the reversed pattern on the reversed value.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


_TEMPLATE_REF = re.compile(r"\$(\$|\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")


def _go_template(replacement: str) -> str:
    """Go's ReplaceAllString expands ``$1``/``${name}`` refs; the pattern has no groups."""
    return _TEMPLATE_REF.sub(lambda m: "$" if m.group(1) == "$" else "", replacement)


def _go_replace_all(regex: re.Pattern[str], value: str, replacement: str) -> str:
    """Replace every match, skipping empty matches that abut the previous one, as Go does."""
    out: list[str] = []
    last = 0
    previous_end = -1
    for match in regex.finditer(value):
        if match.start() == match.end() == previous_end:
            continue
        out.append(value[last : match.start()])
        out.append(replacement)
        last = previous_end = match.end()
    out.append(value[last:])
    return "".join(out)
