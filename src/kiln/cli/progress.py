"""How build progress reaches the terminal (``--progress auto|plain|quiet``), and the
bars of pushes and pulls."""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import click

if TYPE_CHECKING:
    from rich.console import Group
    from rich.progress import TaskID

MODES = ("auto", "plain", "quiet")
_TAIL = 5
_DONE = re.compile(r"DONE \d+\.\ds")  # how the builder ends a step that ran


class Progress(Protocol):
    def __call__(self, line: str) -> None: ...

    def close(self) -> None: ...


class _Plain:
    """Lines as they come (``plain``, and ``auto`` off a terminal)."""

    def __call__(self, line: str) -> None:
        click.echo(line, err=True)

    def close(self) -> None:
        pass


class _Quiet:
    def __call__(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Step:
    number: str
    header: str
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    cached: bool = False
    failed: bool = False
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL))


class _Live:
    """A rich live view: every step with its state and time, the running ones with the last
    lines of their output; printed in full once the build ends."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True, highlight=False)
        self.steps: dict[str, _Step] = {}
        self.notes: list[str] = []
        self.live = Live(console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def __call__(self, line: str) -> None:
        number, _, rest = line.partition(" ")
        if not line.startswith("#"):
            self.notes.append(line)
        elif rest.startswith("["):
            self.steps[number] = _Step(number, rest)
        elif number in self.steps:
            step = self.steps[number]
            if rest in ("CACHED", "ERROR") or _DONE.fullmatch(rest):
                step.finished = time.monotonic()
                step.cached, step.failed = rest == "CACHED", rest == "ERROR"
            else:
                step.tail.append(rest)
        self.live.update(self._render())

    def _render(self) -> Group:
        from rich.console import Group
        from rich.text import Text

        rows: list[Text] = [Text(note, style="yellow") for note in self.notes]
        for step in self.steps.values():
            end = step.finished or time.monotonic()
            state = "CACHED" if step.cached else f"{end - step.started:5.1f}s"
            state += "  ERROR" if step.failed else ""
            style = "bold" if step.finished is None else ""
            style = "green" if step.cached else "red" if step.failed else style
            rows.append(Text(f"{step.number} {step.header}  {state}", style=style))
            if step.finished is None:
                rows.extend(Text(f"    {line}", style="dim") for line in step.tail)
        return Group(*rows)

    def close(self) -> None:
        now = time.monotonic()
        for step in self.steps.values():
            step.finished = step.finished or now
        self.live.update(self._render())
        self.live.stop()


def printer(mode: str) -> Progress:
    """A sink for the builder's progress lines, as ``--progress`` asks."""
    if mode == "quiet":
        return _Quiet()
    if mode == "plain" or not sys.stderr.isatty():
        return _Plain()
    return _Live()


@contextlib.contextmanager
def transfer_bars(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A bar per blob for pushes and pulls on a terminal (``enabled``); None otherwise, where
    the per-blob lines say enough."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
    from rich.progress import Progress as Bars

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn())  # fmt: skip
    with Bars(*columns, transient=True) as bars:
        tasks: dict[str, TaskID] = {}
        lock = threading.Lock()

        def report(digest: str, done: int, total: int) -> None:
            with lock:
                if digest not in tasks:
                    tasks[digest] = bars.add_task(digest.removeprefix("sha256:")[:12], total=total)
            bars.update(tasks[digest], completed=done)

        yield report
