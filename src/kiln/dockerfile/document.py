"""A whole Dockerfile: its directives, the ARGs before the first FROM, and its stages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.dockerfile.directives import ParserDirectives
from kiln.dockerfile.instructions import Arg, From, Instruction, parse_instruction
from kiln.dockerfile.parser import ParseResult, ParseWarning, parse
from kiln.errors import DockerfileError, KilnError


@dataclass(frozen=True)
class Stage:
    """A FROM and the instructions that follow it, up to the next FROM."""

    index: int
    from_: From
    instructions: tuple[Instruction, ...]

    @property
    def name(self) -> str:
        """The ``AS`` name (lower-case), or "" for an unnamed stage."""
        return self.from_.stage_name

    @property
    def display_name(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True)
class Dockerfile:
    """The typed form of one Dockerfile; ``syntax`` keeps the node-level parse."""

    file: str
    stages: tuple[Stage, ...]
    meta_args: tuple[Arg, ...]
    syntax: ParseResult

    @property
    def directives(self) -> ParserDirectives:
        return self.syntax.directives

    @property
    def escape(self) -> str:
        return self.syntax.escape

    @property
    def warnings(self) -> list[ParseWarning]:
        return self.syntax.warnings

    def stage(self, name_or_index: str) -> Stage | None:
        """A stage by (case-insensitive) name, or by index as ``COPY --from=0`` writes it."""
        if name_or_index.isdecimal():
            index = int(name_or_index)
            return self.stages[index] if index < len(self.stages) else None
        wanted = name_or_index.lower()
        found = None
        for stage in self.stages:
            if stage.name == wanted:
                found = stage  # a repeated name means the last stage, as in BuildKit
        return found


def parse_dockerfile(text: str, *, file: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile text into stages of typed instructions."""
    syntax = parse(text, file=file)
    meta_args: list[Arg] = []
    stages: list[tuple[From, list[Instruction]]] = []
    for node in syntax.nodes:
        try:
            instruction = parse_instruction(node)
        except DockerfileError as err:
            raise err.in_file(file) from None
        if isinstance(instruction, From):
            stages.append((instruction, []))
        elif stages:
            stages[-1][1].append(instruction)
        elif isinstance(instruction, Arg):
            meta_args.append(instruction)
        else:
            raise DockerfileError(
                f"{instruction.name} comes before the first FROM",
                line=node.start_line,
                file=file,
                hint="only ARG may precede FROM",
            )
    if not stages:
        raise DockerfileError(
            "dockerfile contains no stages to build", file=file, hint="add a FROM"
        )
    return Dockerfile(
        file=file,
        stages=tuple(Stage(i, f, tuple(body)) for i, (f, body) in enumerate(stages)),
        meta_args=tuple(meta_args),
        syntax=syntax,
    )


def load_dockerfile(path: Path, *, display_name: str | None = None) -> Dockerfile:
    """Read and parse a Dockerfile from disk; errors name it as ``display_name``."""
    name = display_name or str(path)
    return parse_dockerfile(read_dockerfile(path, name), file=name)


def read_dockerfile(path: Path, name: str) -> str:
    """A Dockerfile's text, undecodable bytes kept (as surrogates) for the parser to report."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KilnError(f"{name}: cannot read Dockerfile: {err.strerror}") from None
    return data.decode("utf-8", errors="surrogateescape")
