"""``kiln workflow run BUILD.yaml``: a whole plugin workflow from a build description."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.workflow import BuildDescription, BuildResults


@click.group("workflow")
def workflow_group() -> None:
    """Build with a plugin workflow (atomic-reactor's build JSON, or YAML)."""


@workflow_group.command("run")
@click.argument("description", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--results", "results_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the build's results (JSON) here, whether it succeeds or not.",
)  # fmt: skip
@click.option(
    "--plugin-file", "plugin_files", multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Python file defining more plugins (repeatable).",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No log lines; only the summary.")
def run_command(
    description: Path, results_path: Path | None, plugin_files: tuple[Path, ...], quiet: bool
) -> None:
    """Run the workflow DESCRIPTION (JSON or YAML) describes."""
    from dataclasses import replace

    from kiln.workflow import BuildDescription

    loaded = BuildDescription.load(description)
    if plugin_files:
        loaded = replace(loaded, plugin_files=(*loaded.plugin_files, *plugin_files))
    results = run_workflow(loaded, quiet, results_path)
    click.echo(f"built {results.image_id} as {', '.join(results.tags)}")
    for registry, images in results.pushed.items():
        for image in images:
            click.echo(f"pushed {image.name} to {registry}: {image.digest}")


def run_workflow(
    description: BuildDescription, quiet: bool, results_path: Path | None
) -> BuildResults:
    """Run a workflow with its log on stderr, its results written where asked (failed or
    not); a failed build is a one-line ``KilnError``."""
    from kiln.workflow import BuildWorkflow

    output = None if quiet else (lambda line: click.echo(line, err=True))
    results = BuildWorkflow(description, output=output).run()
    if results_path is not None:
        results.write(results_path)
    if results.failed:
        raise KilnError(f"build failed: {results.error}")
    return results
