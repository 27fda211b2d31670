"""The ``kiln`` command: a thin shell over the library.

Every ``KilnError`` becomes one line on stderr and exit status 1; nothing else is caught, so a
traceback always means a bug in kiln.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from kiln import __version__
from kiln.check import Severity, check_build
from kiln.dockerfile.document import Dockerfile, load_dockerfile, parse_dockerfile
from kiln.dockerfile.serialize import dockerfile_to_dict
from kiln.errors import KilnError

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class _KilnGroup(click.Group):
    """Reports a ``KilnError`` from any command as ``error: ...`` and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KilnError as err:
            stderr.print(f"[bold red]error:[/] {escape(str(err))}")
            sys.exit(1)


@click.group(cls=_KilnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="kiln")
def cli() -> None:
    """kiln builds container images from Dockerfiles, with no daemon."""


def _read_dockerfile(file: str) -> Dockerfile:
    if file == "-":
        return parse_dockerfile(sys.stdin.read(), file="<stdin>")
    return load_dockerfile(Path(file), display_name=file)


@cli.command("parse")
@click.option(
    "-f", "--file", "file", default="Dockerfile", show_default=True,
    help="The Dockerfile to parse ('-' reads standard input).",
)  # fmt: skip
@click.option(
    "--format", "output_format", type=click.Choice(["buildkit", "json"]), default="buildkit",
    show_default=True, help="buildkit: BuildKit's AST dump; json: kiln's typed instructions.",
)  # fmt: skip
def parse_command(file: str, output_format: str) -> None:
    """Print the parse of a Dockerfile."""
    dockerfile = _read_dockerfile(file)
    if output_format == "buildkit":
        click.echo(dockerfile.syntax.dump(), nl=False)
    else:
        click.echo(json.dumps(dockerfile_to_dict(dockerfile), indent=2, ensure_ascii=False))


@cli.command("check")
@click.option(
    "-f", "--file", "file", default=None,
    help="The Dockerfile (default: CONTEXT/Dockerfile).",
)  # fmt: skip
@click.option(
    "--build-arg", "build_args", multiple=True, metavar="NAME=VALUE",
    help="A build argument, as for a build (repeatable).",
)  # fmt: skip
@click.option("--target", default="", help="Check the build of this stage.")
@click.argument(
    "context", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
def check_command(
    file: str | None, build_args: tuple[str, ...], target: str, context: Path
) -> None:
    """Report problems in a Dockerfile and its build context, as FILE:LINE: message.

    Exits with status 1 when there is an error; warnings alone exit 0.
    """
    dockerfile = Path(file) if file else context / "Dockerfile"
    report = check_build(
        dockerfile,
        context,
        build_args=_parse_build_args(build_args),
        target=target,
        display_name=file or str(dockerfile),
    )
    for problem in report.problems:
        color = "red" if problem.severity is Severity.ERROR else "yellow"
        click.echo(click.style(str(problem), fg=color) if sys.stdout.isatty() else str(problem))
    click.echo(report.summary(), err=True)
    if report.has_errors:
        sys.exit(1)


def _parse_build_args(values: tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` pairs; a bare ``NAME`` takes its value from the environment (as docker)."""
    args: dict[str, str] = {}
    for item in values:
        name, has_value, value = item.partition("=")
        if has_value:
            args[name] = value
        elif name in os.environ:
            args[name] = os.environ[name]
    return args


def main() -> None:
    cli(prog_name="kiln")
