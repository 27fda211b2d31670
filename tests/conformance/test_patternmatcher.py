"""moby/patternmatcher's own tables: single patterns, exceptions, and its filepath.Match table.

The last table (TestMatch upstream) goes through the matcher, so a pattern matching a parent
directory matches the path, and a malformed pattern fails when the matcher is built.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kiln.context.patterns import PatternError, PatternMatcher
from tests.conformance.shared import CONFORMANCE, conformance_path

CASES = CONFORMANCE / "patternmatcher" / "cases.json"


def _cases(table: str) -> list[Any]:
    if not CASES.exists():
        return [pytest.param(None, id="absent")]
    cases = json.loads(CASES.read_text())[table]
    return [pytest.param(case, id=f"{i}") for i, case in enumerate(cases)]


def _data() -> dict[str, Any]:
    return dict(json.loads(conformance_path("patternmatcher", "cases.json").read_text()))


def test_case_counts() -> None:
    data = _data()
    assert [len(data[t]) for t in ("matches", "matches_unix_only", "multi_pattern")] == [67, 1, 4]
    assert len(data["filepath_match"]) == 54


@pytest.mark.parametrize("case", _cases("matches") + _cases("matches_unix_only"))
def test_single_pattern(case: dict[str, Any]) -> None:
    conformance_path("patternmatcher", "cases.json")
    matcher = PatternMatcher([case["pattern"]])
    assert matcher.matches(case["path"]) is case["match"], case


@pytest.mark.parametrize("case", _cases("multi_pattern"))
def test_exceptions_last_match_wins(case: dict[str, Any]) -> None:
    conformance_path("patternmatcher", "cases.json")
    matcher = PatternMatcher(case["patterns"])
    assert matcher.matches(case["path"]) is case["match"], case


@pytest.mark.parametrize("case", _cases("filepath_match"))
def test_filepath_match(case: dict[str, Any]) -> None:
    conformance_path("patternmatcher", "cases.json")
    if case["error"]:
        with pytest.raises(PatternError):
            PatternMatcher([case["pattern"]]).matches(case["path"])
    else:
        assert PatternMatcher([case["pattern"]]).matches(case["path"]) is case["match"], case
