"""The Dockerfile language: parse, type, expand and plan, as BuildKit's frontend does."""

from kiln.dockerfile.document import Dockerfile, Stage, load_dockerfile, parse_dockerfile
from kiln.dockerfile.instructions import Expander, Instruction, Location, parse_instruction
from kiln.dockerfile.parser import Node, ParseResult, ParseWarning, parse
from kiln.dockerfile.plan import (
    BaseImageConfig,
    BaseImageResolver,
    BuildOptions,
    BuildPlan,
    PlanWarning,
    StagePlan,
    Step,
    plan_build,
)
from kiln.dockerfile.shell import Expansion, ShellError, ShellLex
from kiln.platform import Platform, PlatformError

__all__ = [
    "BaseImageConfig",
    "BaseImageResolver",
    "BuildOptions",
    "BuildPlan",
    "Dockerfile",
    "Expander",
    "Expansion",
    "Instruction",
    "Location",
    "Node",
    "ParseResult",
    "ParseWarning",
    "PlanWarning",
    "Platform",
    "PlatformError",
    "ShellError",
    "ShellLex",
    "Stage",
    "StagePlan",
    "Step",
    "load_dockerfile",
    "parse",
    "parse_dockerfile",
    "parse_instruction",
    "plan_build",
]
