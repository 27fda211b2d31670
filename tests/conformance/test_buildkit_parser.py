"""BuildKit's own parser test data: golden dumps, negative cases, and line numbers."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from kiln.dockerfile.parser import parse
from kiln.errors import KilnError
from tests.conformance.shared import CONFORMANCE, conformance_path

PARSER = CONFORMANCE / "buildkit" / "parser"


def _cases(folder: str) -> list[str]:
    path = PARSER / folder
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else ["(absent)"]


def test_there_are_33_golden_files_and_4_negative_cases() -> None:
    conformance_path("buildkit", "parser")
    assert len(_cases("testfiles")) == 33
    assert len(_cases("testfiles-negative")) == 4


@pytest.mark.parametrize("case", _cases("testfiles"))
def test_golden_file_dump_equals_buildkit(case: str) -> None:
    folder = conformance_path("buildkit", "parser", "testfiles", case)
    text = (folder / "Dockerfile").read_bytes().decode()
    expected = (folder / "result").read_bytes().decode()
    assert parse(text).dump() == expected


@pytest.mark.parametrize("case", _cases("testfiles"))
def test_kiln_parse_prints_the_golden_dump_whatever_the_semantics(case: str) -> None:
    """``flags``, ``health``, ``json`` and ``jeztah-invalid-json-*`` would not build (CMD before
    FROM, unknown flags): ``kiln parse`` prints their syntax tree all the same."""
    folder = conformance_path("buildkit", "parser", "testfiles", case)
    result = CliRunner().invoke(cli, ["parse", "-f", str(folder / "Dockerfile")])
    assert result.exit_code == 0, result.output
    assert result.stdout == (folder / "result").read_bytes().decode()


@pytest.mark.parametrize("case", _cases("testfiles-negative"))
def test_negative_case_fails_to_parse(case: str) -> None:
    folder = conformance_path("buildkit", "parser", "testfiles-negative", case)
    text = (folder / "Dockerfile").read_bytes().decode()
    with pytest.raises(KilnError):
        parse(text)


def test_instruction_line_numbers() -> None:
    path = conformance_path("buildkit", "parser", "testfile-line", "Dockerfile")
    nodes = parse(path.read_text()).nodes
    assert [(n.start_line, n.end_line) for n in nodes] == [(5, 5), (11, 12), (17, 31)]
