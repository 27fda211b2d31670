"""``kiln check``: the problems a build would meet, found before it runs.

A Dockerfile error stops a build at the first one; a check reports every broken instruction,
then plans all stages (variables, stages, targets) and looks every COPY and ADD source up in
the build context, through the same .dockerignore rules a build applies.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kiln.context import IgnoreRules, clean_path, load_ignore, match_glob
from kiln.dockerfile.document import parse_dockerfile
from kiln.dockerfile.instructions import Add, Copy, Instruction, Onbuild, parse_instruction
from kiln.dockerfile.parser import parse
from kiln.dockerfile.plan import BuildOptions, plan_build
from kiln.errors import DockerfileError, KilnError

_URL_PREFIXES = ("http://", "https://", "git@", "git://", "ssh://")
_WILDCARDS = frozenset("*?[")
_EXEC_FORM = frozenset(("run", "cmd", "entrypoint"))


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding, printed as ``FILE:LINE: message`` (warnings say so)."""

    file: str
    line: int | None
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        kind = "warning: " if self.severity is Severity.WARNING else ""
        return f"{where}: {kind}{self.message}"


@dataclass
class CheckReport:
    file: str
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        """``FILE: no problems`` or ``FILE: 2 errors, 1 warning``."""
        errors = sum(p.severity is Severity.ERROR for p in self.problems)
        warnings = len(self.problems) - errors
        if not self.problems:
            return f"{self.file}: no problems"
        counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in
                  ((errors, "error"), (warnings, "warning")) if n]  # fmt: skip
        return f"{self.file}: {', '.join(counts)}"

    @property
    def has_errors(self) -> bool:
        return any(p.severity is Severity.ERROR for p in self.problems)

    def error(self, err: DockerfileError) -> None:
        message = f"{err.message} ({err.hint})" if err.hint else err.message
        self.problems.append(Problem(err.file, err.line, message))

    def warning(self, file: str, line: int | None, message: str) -> None:
        self.problems.append(Problem(file, line, message, Severity.WARNING))


def check_build(
    dockerfile: Path,
    context: Path,
    *,
    build_args: Mapping[str, str] | None = None,
    target: str = "",
    display_name: str | None = None,
) -> CheckReport:
    """Every problem found in ``dockerfile`` and in how it uses ``context``."""
    name = display_name or str(dockerfile)
    try:
        text = dockerfile.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as err:
        raise KilnError(f"{name}: cannot read Dockerfile: {err.strerror}") from None
    report = CheckReport(name)
    try:
        syntax = parse(text, file=name)
    except DockerfileError as err:
        report.error(err.in_file(name))
        return report
    for warning in syntax.warnings:
        report.warning(name, warning.line, warning.message)
    for node in syntax.nodes:
        try:
            instruction = parse_instruction(node)
        except DockerfileError as err:
            report.error(err.in_file(name))
        else:
            if isinstance(instruction, Onbuild) and instruction.trigger is None:
                report.warning(
                    name,
                    node.start_line,
                    "ONBUILD trigger will fail in every build based on this image: "
                    + instruction.trigger_problem,
                )
        looks_like_json = bool(node.args) and node.args[0].startswith("[")
        if node.name in _EXEC_FORM and not node.json and looks_like_json:
            report.warning(
                name,
                node.start_line,
                f"{node.keyword.upper()} looks like a JSON array but is not valid JSON, "
                "so it runs in a shell",
            )
    if report.has_errors:
        return report
    try:
        document = parse_dockerfile(text, file=name)
        plan = plan_build(
            document,
            BuildOptions(build_args=dict(build_args or {}), target=target, all_stages=True),
        )
    except DockerfileError as err:
        report.error(err.in_file(name))
        return report
    for plan_warning in plan.warnings:
        report.warning(name, plan_warning.line, plan_warning.message)
    rules = load_ignore(context, dockerfile)
    for stage in plan.stages:
        for step in stage.steps:
            for message in _missing_sources(step.instruction, context, rules):
                line = step.instruction.location.start_line
                report.problems.append(Problem(name, line, message))
    return report


def _context_sources(instruction: Instruction) -> Iterator[str]:
    """The paths a COPY or ADD reads from the build context."""
    if isinstance(instruction, Copy) and not instruction.from_:
        yield from instruction.sources
    elif isinstance(instruction, Add):
        yield from (s for s in instruction.sources if not s.startswith(_URL_PREFIXES))


def _missing_sources(
    instruction: Instruction, context: Path, rules: IgnoreRules | None
) -> Iterator[str]:
    for source in _context_sources(instruction):
        relative = clean_path("/" + source).lstrip("/")
        if not relative:
            continue  # the whole context always exists
        what = f'{instruction.name} source "{source}"'
        if _WILDCARDS & set(relative):
            matches = list(_glob(context, relative))
            kept = [m for m in matches if not (rules and rules.excludes(m))]
            if not matches:
                yield f"{what} matches no file in the build context"
            elif not kept and rules:
                yield f"{what} matches only files excluded by {rules.describe(matches[0])}"
        elif not os.path.lexists(context / relative):
            yield f"{what} not found in the build context"
        elif rules and rules.excludes(relative):
            yield f"{what} is excluded by {rules.describe(relative)}"


def _glob(context: Path, pattern: str) -> Iterator[str]:
    """Context paths matching a source pattern, with Go's ``filepath.Match`` semantics."""
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if _WILDCARDS & set(part))
    start = context.joinpath(*parts[:fixed])
    depth = len(parts)
    for root, dirs, files in os.walk(start):
        relative_root = Path(root).relative_to(context).as_posix()
        level = 0 if relative_root == "." else relative_root.count("/") + 1
        for entry in (*dirs, *files):
            path = entry if relative_root == "." else f"{relative_root}/{entry}"
            if level + 1 == depth and match_glob(pattern, path):
                yield path
        if level + 1 >= depth:
            dirs.clear()
