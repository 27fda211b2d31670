"""The argument grammar of each instruction, applied to the text after keyword and flags.

Arguments stay as written here (quotes included, variables unexpanded); giving them meaning
is the job of ``instructions``. The grammars, after BuildKit's line parsers:

- JSON or shell form (RUN, CMD, ENTRYPOINT, SHELL): a JSON array of strings, else the text;
- JSON or words (ADD, COPY, VOLUME): a JSON array of strings, else whitespace-split words;
- ``key=value`` pairs or the legacy ``KEY value`` (ENV, LABEL) as key/value/separator triples;
- words honouring quotes and escapes (ARG); whitespace-split words (FROM, EXPOSE);
- the whole text (MAINTAINER, STOPSIGNAL, USER, WORKDIR);
- a type word then JSON or shell form (HEALTHCHECK); another instruction (ONBUILD).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from kiln.dockerfile.gostr import go_quote
from kiln.dockerfile.shell import is_space

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")


class ArgumentParseError(ValueError):
    """The arguments do not fit the instruction's grammar."""


class _NotJSON(Exception):
    """The text is not a JSON array: fall back to the non-JSON form."""


NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


def parse_arguments(name: str, rest: str, escape: str) -> tuple[list[str], bool, str | None]:
    """``(args, is_json, trigger)`` for instruction ``name`` (lower-case) and its text.

    ``trigger`` is the wrapped instruction's text for ONBUILD and None otherwise. An
    unknown instruction parses to one empty argument, as in BuildKit's AST.
    """
    if name == "onbuild":
        return [], False, (rest or None)
    grammar = _GRAMMARS.get(name)
    if grammar is None:
        return [""], False, None
    args, is_json = grammar(rest, escape)
    return args, is_json, None


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words."""
    words: list[str] = []
    word: list[str] = []
    in_word = in_quote = blank_ok = False
    quote = ""
    pos, n = 0, len(rest)
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if not in_word and not in_quote:
            if pos == n:
                break
            if is_space(ch):
                pos += 1
                continue
            in_word = True
        if pos == n:
            if blank_ok or word:
                words.append("".join(word))
            break
        if in_quote:
            if ch == quote:
                in_quote, in_word = False, True
            elif ch == escape and quote != "'":
                if pos + 1 == n:
                    in_quote, in_word = False, True
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if is_space(ch):
            if blank_ok or word:
                words.append("".join(word))
            word, blank_ok, in_word = [], False, False
            pos += 1
            continue
        if ch in "'\"":
            quote, blank_ok, in_quote, in_word = ch, True, True, False
        elif ch == escape:
            if pos + 1 == n:
                pos += 1
                continue  # an escape at the very end is dropped
            word.append(ch)
            pos += 1
            ch = rest[pos]
        word.append(ch)
        pos += 1
    return words


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # Go's decoder rejects NaN and Infinity


def parse_json_array(rest: str) -> list[str]:
    """A JSON array of strings; ``_NotJSON`` if it is not JSON, an error if not strings."""
    start = 0
    while start < len(rest) and is_space(rest[start]):
        start += 1
    text = rest[start:]
    if not text.startswith("["):
        raise _NotJSON
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise _NotJSON from None
    if not isinstance(value, list):
        raise _NotJSON
    if not all(isinstance(item, str) for item in value):
        raise ArgumentParseError(NOT_STRING_ARRAY)
    return value


def _maybe_json(rest: str, escape: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    try:
        return parse_json_array(rest), True
    except _NotJSON:
        return [rest], False


def _maybe_json_to_list(rest: str, escape: str) -> tuple[list[str], bool]:
    try:
        return parse_json_array(rest), True
    except _NotJSON:
        return _whitespace_delimited(rest, escape)


def _whitespace_delimited(rest: str, escape: str) -> tuple[list[str], bool]:
    return (_WHITESPACE.split(rest) if rest else []), False


def _whole_string(rest: str, escape: str) -> tuple[list[str], bool]:
    return ([rest] if rest else []), False


def _name_or_name_value(rest: str, escape: str) -> tuple[list[str], bool]:
    return parse_words(rest, escape), False


def _key_values(keyword: str) -> Callable[[str, str], tuple[list[str], bool]]:
    def parse(rest: str, escape: str) -> tuple[list[str], bool]:
        words = parse_words(rest, escape)
        if not words:
            return [], False
        if "=" not in words[0]:
            # The legacy form: the first word is the key, the rest of the line the value.
            parts = _WHITESPACE.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise ArgumentParseError(f"{keyword} must have two arguments")
            return [parts[0], parts[1], ""], False
        args: list[str] = []
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise ArgumentParseError(
                    f"Syntax error - can't find = in {go_quote(word)}. "
                    "Must be of the form: name=value"
                )
            args += [key, value, "="]
        return args, False

    return parse


def _health_config(rest: str, escape: str) -> tuple[list[str], bool]:
    sep = 0
    while sep < len(rest) and not is_space(rest[sep]):
        sep += 1
    if sep == 0:
        return [], False
    start = sep
    while start < len(rest) and is_space(rest[start]):
        start += 1
    args, is_json = _maybe_json(rest[start:], escape)
    return [rest[:sep], *args], is_json


_GRAMMARS: dict[str, Callable[[str, str], tuple[list[str], bool]]] = {
    "add": _maybe_json_to_list,
    "arg": _name_or_name_value,
    "cmd": _maybe_json,
    "copy": _maybe_json_to_list,
    "entrypoint": _maybe_json,
    "env": _key_values("ENV"),
    "expose": _whitespace_delimited,
    "from": _whitespace_delimited,
    "healthcheck": _health_config,
    "label": _key_values("LABEL"),
    "maintainer": _whole_string,
    "run": _maybe_json,
    "shell": _maybe_json,
    "stopsignal": _whole_string,
    "user": _whole_string,
    "volume": _maybe_json_to_list,
    "workdir": _whole_string,
}
