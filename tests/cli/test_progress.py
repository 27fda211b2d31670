"""--progress: what a user sees while a build runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.cli.progress import printer
from tests.engine.support import NEEDS_RUNC, context, invoke


def feed(mode: str) -> None:
    output = printer(mode)
    for line in (
        "#1 [build 1/3] FROM busybox",
        "#1 DONE 0.0s",
        "#2 [build 2/3] RUN make",
        "#2 compiling",
        "#2 DONE 1.5s",
        "#3 [build 3/3] COPY . /src",
        "#3 CACHED",
        "#4 [final 1/2] FROM busybox",
        "#5 [final 2/2] RUN false",
        "#5 ERROR",
        "warning: Dockerfile: build-arg 'X' was not consumed by any ARG",
    ):
        output(line)
    output.close()


def test_plain_prints_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    feed("plain")
    assert capsys.readouterr().err.splitlines()[2:5] == [
        "#2 [build 2/3] RUN make", "#2 compiling", "#2 DONE 1.5s",
    ]  # fmt: skip


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    feed("quiet")
    assert capsys.readouterr().err == ""


def test_auto_on_a_terminal_shows_steps_states_and_notes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    feed("auto")
    screen = capsys.readouterr().err
    assert "#3 [build 3/3] COPY . /src  CACHED" in screen
    assert "#2 [build 2/3] RUN make" in screen and "compiling" not in screen  # ended: no tail
    assert "#5 [final 2/2] RUN false" in screen and "ERROR" in screen
    assert "build-arg 'X' was not consumed" in screen


@NEEDS_RUNC
def test_a_build_numbers_steps_per_stage_and_ends_each_as_buildkit(
    kiln_root: Path, tmp_path: Path
) -> None:
    """Metadata steps print nothing; FROM an image and every layer step are numbered within
    their stage; a cached step says CACHED, a step that ran DONE with its time."""
    ctx = context(
        tmp_path,
        "FROM busybox:base AS build\nENV A=1\nRUN echo built | tee /out\nWORKDIR /w\n"
        "FROM scratch\nLABEL stage=final\nCOPY --from=build /out /out\nCOPY Dockerfile /\n",
    )
    headers = [
        "#1 [build 1/3] FROM busybox:base", "#2 [build 2/3] RUN echo built | tee /out",
        "#3 [build 3/3] WORKDIR /w", "#4 [stage-1 1/2] COPY --from=build /out /out",
        "#5 [stage-1 2/2] COPY Dockerfile /",
    ]  # fmt: skip
    first = invoke("build", "--progress", "plain", "-t", "progress:1", str(ctx)).stderr
    lines = [line for line in first.splitlines() if line.startswith("#")]
    assert [line for line in lines if " [" in line] == headers
    assert "#2 built" in lines
    ends = [line for line in lines if " [" not in line and line != "#2 built"]
    assert [end.rsplit(" ", 1)[0] for end in ends] == [f"#{n} DONE" for n in range(1, 6)]
    assert all(end.endswith("s") and float(end.split()[-1][:-1]) >= 0 for end in ends)
    again = invoke("build", "--progress", "plain", "-t", "progress:1", str(ctx)).stderr
    assert [line for line in again.splitlines() if " [" not in line and line.startswith("#")] == [
        "#1 DONE 0.0s", "#2 CACHED", "#3 CACHED", "#4 CACHED", "#5 CACHED",
    ]  # fmt: skip


@NEEDS_RUNC
def test_one_stage_has_no_stage_name_and_numbers_padded(kiln_root: Path, tmp_path: Path) -> None:
    steps = "".join(f"RUN echo {i}\n" for i in range(10))
    ctx = context(tmp_path, "FROM busybox:base\n" + steps)
    out = invoke("build", "--progress", "plain", "-t", "progress:2", str(ctx)).stderr
    headers = [line for line in out.splitlines() if " [" in line]
    assert headers[0] == "#1 [ 1/11] FROM busybox:base"
    assert headers[-1] == "#11 [11/11] RUN echo 9"
