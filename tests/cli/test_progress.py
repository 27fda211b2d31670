"""--progress: what a user sees while a build runs."""

from __future__ import annotations

import pytest

from kiln.cli.progress import printer


def feed(mode: str) -> None:
    output = printer(mode)
    for line in (
        "#1 [build 1/3] RUN make",
        "#1 compiling",
        "#2 [build 2/3] COPY . /src",
        "#2 CACHED",
        '#3 [final 3/3] CMD ["app"]',
        "warning: Dockerfile: build-arg 'X' was not consumed by any ARG",
    ):
        output(line)
    output.close()


def test_plain_prints_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    feed("plain")
    assert capsys.readouterr().err.splitlines()[:2] == ["#1 [build 1/3] RUN make", "#1 compiling"]


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    feed("quiet")
    assert capsys.readouterr().err == ""


def test_auto_on_a_terminal_shows_steps_states_and_notes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    feed("auto")
    screen = capsys.readouterr().err
    assert "#2 [build 2/3] COPY . /src  CACHED" in screen
    assert "#1 [build 1/3] RUN make" in screen and "#3 [final 3/3]" in screen
    assert "build-arg 'X' was not consumed" in screen
