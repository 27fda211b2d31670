"""How build progress reaches the terminal: ``--progress auto|plain|quiet``."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

MODES = ("auto", "plain", "quiet")


def printer(mode: str) -> Callable[[str], None]:
    """A sink for the builder's progress lines.

    ``plain`` writes them as they come; ``auto`` styles them with rich on a terminal (step
    headers bold, CACHED green, step output dimmed) and is ``plain`` elsewhere.
    """
    if mode == "quiet":
        return lambda line: None
    if mode == "plain" or not sys.stderr.isatty():
        return lambda line: click.echo(line, err=True)
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False, soft_wrap=True)

    def styled(line: str) -> None:
        text = escape(line)
        _, _, rest = line.partition(" ")
        if not line.startswith("#"):
            console.print(text)
        elif rest == "CACHED":
            console.print(f"[green]{text}[/]")
        elif rest.startswith("["):
            console.print(f"[bold]{text}[/]")
        else:
            console.print(f"[dim]{text}[/]")

    return styled
