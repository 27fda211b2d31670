""".dockerignore files: reading, precedence, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.context import find_ignore_file, load_ignore, read_ignore_patterns
from kiln.errors import ContextError


def test_read_follows_moby_readall() -> None:
    text = "\ufeff# comment\n\n  *.log  \n /abs/path\n!  /keep.log\n  # not a comment\n./a//b/\n"
    patterns = read_ignore_patterns(text)
    assert [(p.text, p.line) for p in patterns] == [
        ("*.log", 3),
        ("abs/path", 4),
        ("!keep.log", 5),
        ("# not a comment", 6),
        ("a/b", 7),
    ]


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    dockerfile = tmp_path / "sub" / "web.Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM scratch\n")
    assert find_ignore_file(tmp_path, dockerfile) == tmp_path / ".dockerignore"
    specific = tmp_path / "sub" / "web.Dockerfile.dockerignore"
    specific.write_text("b\n")
    assert find_ignore_file(tmp_path, dockerfile) == specific
    rules = load_ignore(tmp_path, dockerfile)
    assert rules is not None
    assert rules.excludes("b/x") and not rules.excludes("a")


def test_no_ignore_file_means_no_rules(tmp_path: Path) -> None:
    assert load_ignore(tmp_path, tmp_path / "Dockerfile") is None


def test_describe_names_the_deciding_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*.txt\n!keep.txt\nsecret*\n")
    rules = load_ignore(tmp_path)
    assert rules is not None
    assert rules.describe("notes.txt") == f"{tmp_path}/.dockerignore:1"
    assert not rules.excludes("keep.txt")
    assert rules.describe("secret.md") == f"{tmp_path}/.dockerignore:3"


@pytest.mark.parametrize(("text", "line"), [("ok\n[\n", 2), ("a\n\n!\n", 3), ("x\\\n", 1)])
def test_bad_pattern_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    (tmp_path / ".dockerignore").write_text(text)
    with pytest.raises(ContextError) as caught:
        load_ignore(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}/.dockerignore:{line}: ")
