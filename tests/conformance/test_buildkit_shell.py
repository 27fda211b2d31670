"""BuildKit's shell-lexer tables: word expansion (envVarTest) and word splitting (wordsTest)."""

from __future__ import annotations

import pytest

from kiln.dockerfile.shell import ShellError, ShellLex
from tests.conformance.shared import CONFORMANCE, conformance_path

SHELL = CONFORMANCE / "buildkit" / "shell"
ENV_VAR_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list[tuple[int, str, str]]:
    path = SHELL / "envVarTest"
    if not path.exists():
        return [(0, "(absent)", "")]
    cases = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        platform, source, expected = (part.strip() for part in line.split("|", 2))
        if platform in ("A", "U"):
            cases.append((number, source, expected))
    return cases


def _words_cases() -> list[tuple[int, dict[str, str], str, str]]:
    path = SHELL / "wordsTest"
    if not path.exists():
        return [(0, {}, "(absent)", "")]
    env: dict[str, str] = {}
    cases = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, _, value = line[4:].partition("=")
            env[name] = value
            continue
        source, expected = line.split("|", 1)
        cases.append((number, dict(env), source.strip(), expected.lstrip(" ")))
    return cases


def test_case_counts() -> None:
    conformance_path("buildkit", "shell")
    assert len(_env_var_cases()) == 228
    assert len(_words_cases()) == 24


@pytest.mark.parametrize(("number", "source", "expected"), _env_var_cases())
def test_env_var_expansion(number: int, source: str, expected: str) -> None:
    conformance_path("buildkit", "shell", "envVarTest")
    lex = ShellLex()
    if expected == "error":
        with pytest.raises(ShellError):
            lex.process_word(source, ENV_VAR_ENV)
    else:
        assert lex.process_word(source, ENV_VAR_ENV) == expected, f"envVarTest line {number}"


@pytest.mark.parametrize(("number", "env", "source", "expected"), _words_cases())
def test_word_splitting(number: int, env: dict[str, str], source: str, expected: str) -> None:
    conformance_path("buildkit", "shell", "wordsTest")
    lex = ShellLex()
    if expected == "error":
        with pytest.raises(ShellError):
            lex.process_words(source, env)
    else:
        assert lex.process_words(source, env) == expected.split(","), f"wordsTest line {number}"
