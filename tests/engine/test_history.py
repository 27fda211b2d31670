"""History texts worded as BuildKit's dispatcher words them (Go's ``%q`` of its values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.dockerfile import parse_dockerfile
from kiln.dockerfile.gostr import go_duration, go_quote_rune
from kiln.engine.history import created_by
from tests.engine.support import NEEDS_RUNC, context, invoke

EMPTY_TAR = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "0s"), (999, "999ns"), (1_500, "1.5µs"), (2_250_000, "2.25ms"),
        (5 * 10**9, "5s"), (90 * 10**9, "1m30s"), (3600 * 10**9, "1h0m0s"),
        (3661 * 10**9 + 5 * 10**8, "1h1m1.5s"), (-2 * 10**9, "-2s"),
    ],
)  # fmt: skip
def test_durations_print_as_go_prints_them(nanoseconds: int, text: str) -> None:
    assert go_duration(nanoseconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, r"'\x00'"), (3, r"'\x03'"), (9, r"'\t'"), (65, "'A'"), (39, r"'\''"), (34, "'\"'"),
     (92, r"'\\'"), (127, r"'\x7f'"), (-1, "'\ufffd'")],
)  # fmt: skip
def test_integers_quote_as_go_runes(value: int, text: str) -> None:
    assert go_quote_rune(value) == text


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ("HEALTHCHECK --interval=5s --timeout=3s --start-period=1m30s --retries=3 "
         "CMD curl -f http://x/ || exit 1",
         'HEALTHCHECK &{["CMD-SHELL" "curl -f http://x/ || exit 1"] "5s" "3s" "1m30s" "0s" '
         "'\\x03'}"),
        ('HEALTHCHECK --start-interval=2s CMD ["true"]',
         'HEALTHCHECK &{["CMD" "true"] "0s" "0s" "0s" "2s" \'\\x00\'}'),
        ("HEALTHCHECK NONE", 'HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" \'\\x00\'}'),
    ],
)  # fmt: skip
def test_healthcheck_history_is_buildkits_struct_dump(line: str, text: str) -> None:
    instruction = parse_dockerfile(f"FROM scratch\n{line}\n").stages[0].instructions[0]
    assert created_by(instruction) == text


@NEEDS_RUNC
def test_a_workdir_that_exists_is_the_empty_layer_as_in_buildkit(
    kiln_root: Path, tmp_path: Path
) -> None:
    """BuildKit's WORKDIR is a mkdir step: a layer even where the directory is there already
    (the empty tar everyone knows as sha256:5f70bf18...); WORKDIR / makes no layer."""
    ctx = context(tmp_path, "FROM busybox:base\nWORKDIR /tmp\nWORKDIR /\nWORKDIR /new\n")
    invoke("build", "-q", "-t", "workdirs:1", str(ctx))
    image = json.loads(invoke("inspect", "workdirs:1").stdout)[0]
    config = json.loads((kiln_root / "blobs" / "sha256" / image["Id"][7:]).read_text())
    assert [(h["created_by"], bool(h.get("empty_layer"))) for h in config["history"][1:]] == [
        ("WORKDIR /tmp", False), ("WORKDIR /", True), ("WORKDIR /new", False),
    ]  # fmt: skip
    layers = image["RootFS"]["Layers"]
    assert len(layers) == 3 and layers[1] == EMPTY_TAR != layers[2]
    assert (kiln_root / "blobs" / "sha256" / EMPTY_TAR[7:]).read_bytes() == bytes(1024)
    rebuilt = invoke("build", "--progress", "plain", "-t", "workdirs:1", str(ctx)).stderr
    assert rebuilt.count("CACHED") == 3
