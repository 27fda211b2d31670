"""Checks of the built image: the labels it must carry, and a command it must pass."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.errors import KilnError
from kiln.workflow.plugin import Phase, Plugin


@dataclass(frozen=True)
class AssertLabelsArgs:
    required_labels: list[str] = field(default_factory=lambda: ["name", "version", "release"])


@dataclass(frozen=True)
class LabelsFound:
    labels: dict[str, str]


class AssertLabels(Plugin[AssertLabelsArgs, LabelsFound]):
    """Fail unless the built image carries every required label, with a value."""

    key = "assert_labels"
    phases = frozenset({Phase.PRE_PUBLISH, Phase.POST_BUILD})

    def run(self) -> LabelsFound:
        labels = self.workflow.engine.inspect(self.workflow.built_image).labels
        missing = [name for name in self.args.required_labels if not labels.get(name)]
        if missing:
            raise KilnError(f"the image lacks required label(s): {', '.join(missing)}")
        return LabelsFound({name: labels[name] for name in self.args.required_labels})


@dataclass(frozen=True)
class TestArgs:
    command: list[str] = field(default_factory=list)  # default: the image's own command
    expect_output: str | None = None  # a text the output must contain


@dataclass(frozen=True)
class TestOutcome:
    exit_code: int
    output: str


class TestBuiltImage(Plugin[TestArgs, TestOutcome]):
    """Run a command in a throwaway container of the built image; a non-zero exit (or
    missing expected output) fails the build before anything is published."""

    __test__ = False  # not a pytest test class, whatever its name
    key = "test_built_image"
    phases = frozenset({Phase.PRE_PUBLISH, Phase.POST_BUILD})

    def run(self) -> TestOutcome:
        lines: list[str] = []
        status = self.workflow.engine.run(
            self.workflow.built_image, list(self.args.command), lines.append
        )
        output = "\n".join(lines)
        for line in lines:
            self.log(line)
        shown = " ".join(self.args.command) or "the image's command"
        if status != 0:
            tail = " | ".join(lines[-3:])
            raise KilnError(f"{shown} exited with {status}" + (f": {tail}" if tail else ""))
        if self.args.expect_output is not None and self.args.expect_output not in output:
            raise KilnError(f"{shown}: the output lacks {self.args.expect_output!r}")
        return TestOutcome(status, output)
