"""Pattern semantics beyond the shared tables: Go's filepath.Match, cleaning, pruning."""

from __future__ import annotations

import pytest

from kiln.context import MatchInfo, PatternError, PatternMatcher, clean_path, match_glob


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("a*", "ab/c", False),  # unlike the matcher, Match never looks at parents
        ("*.go", "main.go", True),
        ("*.go", "cmd/main.go", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "bx", False),
        ("[!a]x", "!x", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("*/b", "a/b", True),
        ("a*b*c", "abxbc", True),
    ],
)
def test_filepath_match(pattern: str, name: str, expected: bool) -> None:
    assert match_glob(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["[", "[a-", "a\\", "[]a]", "*x[", "[x-]"])
def test_malformed_glob_raises(pattern: str) -> None:
    with pytest.raises(PatternError):
        match_glob(pattern, "zzz")


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("", "."), ("a//b", "a/b"), ("./a/./b/", "a/b"), ("a/../../b", "../b"), ("//a", "/a")],
)
def test_clean_path_is_go_filepath_clean(path: str, cleaned: str) -> None:
    assert clean_path(path) == cleaned


def test_last_matching_pattern_wins() -> None:
    matcher = PatternMatcher(["*.md", "!README.md", "docs"])
    assert matcher.matches("CHANGES.md")
    assert not matcher.matches("README.md")
    assert matcher.matches("docs/README.md")


def test_a_directory_pattern_excludes_everything_below_it() -> None:
    matcher = PatternMatcher(["build"])
    assert matcher.matches("build/out/app.o")
    assert not matcher.matches("buildx/a")


def test_double_star_matches_any_depth() -> None:
    matcher = PatternMatcher(["**/*.pyc"])
    assert matcher.matches("a.pyc")
    assert matcher.matches("pkg/sub/a.pyc")
    assert not matcher.matches("pkg/a.py")


def test_exclamation_alone_is_illegal() -> None:
    with pytest.raises(PatternError, match="illegal exclusion"):
        PatternMatcher(["!"])


@pytest.mark.parametrize(
    ("patterns", "directory", "may_include"),
    [
        (["vendor"], "vendor", False),
        (["vendor", "!vendor/keep"], "vendor", True),
        (["vendor", "!vendor/keep"], "other", False),
        (["vendor", "!vendor/keep/**"], "vendor/keep", True),
        (["a", "!a/b/*"], "a/c", False),
        # An exception with a wildcard could match anywhere: never prune.
        (["*", "!**/keep"], "deep", True),
        (["*", "!src/*/keep"], "docs", True),
    ],
)
def test_may_include_under(patterns: list[str], directory: str, may_include: bool) -> None:
    assert PatternMatcher(patterns).may_include_under(directory) is may_include


def test_incremental_matching_agrees_with_full_matching() -> None:
    matcher = PatternMatcher(["a", "!a/b", "a/b/c", "**/x", "!**/x/y"])
    paths = ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/d", "x", "q/x", "q/x/y", "q/x/y/z"]
    infos = {}
    for path in paths:
        parent = path.rpartition("/")[0]
        excluded, infos[path] = matcher.match_in_dir(path, infos.get(parent, MatchInfo()))
        assert excluded is matcher.matches(path), path
