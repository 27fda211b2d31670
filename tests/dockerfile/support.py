"""Small helpers shared by the Dockerfile tests: parse, plan, and pick out what a test checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiln.dockerfile.document import Dockerfile, parse_dockerfile
from kiln.dockerfile.instructions import Instruction
from kiln.dockerfile.plan import (
    BaseImageResolver,
    BuildOptions,
    BuildPlan,
    StagePlan,
    Step,
    plan_build,
)
from kiln.platform import Platform

# A fixed target platform, so no test depends on the machine it runs on.
AMD64 = Platform("linux", "amd64")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def dockerfile(text: str, file: str = "Dockerfile") -> Dockerfile:
    return parse_dockerfile(text, file=file)


def body(text: str) -> tuple[Instruction, ...]:
    """The instructions of the last stage of ``text``."""
    return dockerfile(text).stages[-1].instructions


def only(text: str) -> Instruction:
    """The one instruction that follows ``FROM scratch``."""
    (instruction,) = body("FROM scratch\n" + text)
    return instruction


def plan(
    text: str,
    *,
    build_args: Mapping[str, str] | None = None,
    target: str = "",
    platform: Platform | None = AMD64,
    all_stages: bool = False,
    resolve_base: BaseImageResolver | None = None,
) -> BuildPlan:
    options = BuildOptions(
        build_args=dict(build_args or {}),
        target=target,
        platform=platform,
        all_stages=all_stages,
    )
    return plan_build(dockerfile(text), options, resolve_base)


def target_stage(text: str, **options: Any) -> StagePlan:
    return plan(text, **options).target_stage


def steps(text: str, **options: Any) -> tuple[Step, ...]:
    """The steps of the target stage."""
    return target_stage(text, **options).steps


def expanded(text: str, **options: Any) -> list[Instruction]:
    """The target stage's instructions after the plan substituted their variables."""
    return [step.instruction for step in steps(text, **options)]


def warnings(text: str, **options: Any) -> list[str]:
    return [warning.message for warning in plan(text, **options).warnings]
