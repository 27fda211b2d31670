"""Layer control: which of the final stage's layers the image merges, after the build.

``--squash`` (docker's), incubator's ``layers`` and makisu's ``#!COMMIT`` all say where the
image's layers end; none changes how steps run. Each step still makes (and caches) its own
layer, and the image's layer list is regrouped afterwards (``kiln.store.merge_layers``), so a
rebuild with other layer control reuses every step. Only layers the final stage's own steps
made are regrouped: those of its base image (or base stage) stay as they are.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.dockerfile import Dockerfile
from kiln.dockerfile.document import parse_dockerfile
from kiln.dockerfile.instructions import Add, Copy, Run
from kiln.dockerfile.parser import parse, split_lines
from kiln.dockerfile.plan import StagePlan, Step
from kiln.errors import KilnError

# makisu's commit annotation, at the end of an instruction's line: "RUN make #!COMMIT".
_COMMIT = re.compile(r"(?:^|[ \t])#![ \t]*commit[ \t]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Layering:
    """Where the final stage's layers end, as one of the three schemes asks.

    ``squash``: all in one layer (docker's ``--squash``). ``explicit``: a layer ends at each
    step whose line ends with ``#!COMMIT`` and at the last step (makisu's
    ``--commit=explicit``). ``splits``: incubator's ``layers``, the 0-based numbers of the
    Dockerfile's instructions a layer ends before (``i`` commits between instructions
    ``i - 1`` and ``i`` of the file, FROM and ARG included; ``[0]``: one layer).
    """

    squash: bool = False
    explicit: bool = False
    splits: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        """Whether the built image's layers are regrouped at all."""
        return self.squash or self.explicit or bool(self.splits)


def load_marked(path: Path, display_name: str) -> tuple[Dockerfile, frozenset[int]]:
    """The Dockerfile at ``path`` and the first lines of the instructions marked
    ``#!COMMIT``. The mark is taken out of every instruction but a shell-form RUN (where it
    is a shell comment, and kept so that RUN's cache key is that of a build without
    ``--commit explicit``): in COPY or FROM it would be an argument."""
    try:
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as err:
        raise KilnError(f"{display_name}: cannot read Dockerfile: {err.strerror}") from None
    lines = list(split_lines(text))
    marked: set[int] = set()
    for node in parse(text, file=display_name).nodes:
        # The instruction's own lines: a heredoc's body is the script's, not the Dockerfile's.
        last = node.start_line if node.heredocs else node.end_line
        for number in range(node.start_line, last + 1):
            line = lines[number - 1].rstrip("\r\n")
            found = _COMMIT.search(line)
            if found is None or line.lstrip().startswith("#"):
                continue
            marked.add(node.start_line)
            shell = node.name == "run" and not (node.args and node.args[0].startswith("["))
            if not shell:
                ending = lines[number - 1][len(line) :]
                lines[number - 1] = line[: found.start()] + ending
    return parse_dockerfile("".join(lines), file=display_name), frozenset(marked)


def check_layering(layering: Layering, dockerfile: Dockerfile) -> None:
    """Refuse, before anything runs, two schemes at once and splits past the file's end
    (as incubator did)."""
    if layering.squash + layering.explicit + bool(layering.splits) > 1:
        raise KilnError("choose one of --squash, --commit explicit and incubator's layers")
    count = len(_instruction_numbers(dockerfile))
    if any(not 0 <= split <= count for split in layering.splits):
        raise KilnError(
            f"layers {list(layering.splits)}: a split must be between 0 and the number of "
            f"instructions in the Dockerfile ({count})"
        )


def layer_groups(
    layering: Layering,
    dockerfile: Dockerfile,
    stage: StagePlan,
    made_by: Sequence[Step | None],
    marked: frozenset[int] = frozenset(),
) -> list[range]:
    """The ranges of the image's layers to merge. ``made_by`` gives, for each layer of the
    image, the step of ``stage`` (the final one) that made it, or None for its base's."""
    base = next((i for i, step in enumerate(made_by) if step is not None), len(made_by))
    if layering.squash:
        return [range(base, len(made_by))]
    if layering.explicit:
        position = {id(step): index for index, step in enumerate(stage.steps)}
        ends = [
            index
            for index, step in enumerate(stage.steps)
            if not step.onbuild and step.instruction.location.start_line in marked
        ]
        keys = [bisect_left(ends, position[id(step)]) for step in made_by[base:] if step]
    elif layering.splits:
        numbers = _instruction_numbers(dockerfile)
        splits = sorted(layering.splits)
        from_line = stage.stage.from_.location.start_line

        def segment(step: Step) -> int:
            line = from_line if step.onbuild else step.instruction.location.start_line
            return bisect_right(splits, numbers[line])

        # incubator commits at a split only if a RUN, COPY or ADD came since the last commit
        # (a WORKDIR's directory waits for the next commit), and always at the end.
        commits = sorted(
            {len(splits)}
            | {segment(s) for s in stage.steps if isinstance(s.instruction, Run | Copy | Add)}
        )
        keys = [commits[bisect_left(commits, segment(step))] for step in made_by[base:] if step]
    else:
        return []
    groups: list[range] = []
    start = base
    for index in range(1, len(keys) + 1):
        if index == len(keys) or keys[index] != keys[index - 1]:
            groups.append(range(start, base + index))
            start = base + index
    return groups


def _instruction_numbers(dockerfile: Dockerfile) -> dict[int, int]:
    """Each instruction's 0-based number in the file, by its first line: incubator's
    numbering (dockerfile-parse's structure: every instruction, in order, comments not)."""
    lines = sorted(
        [a.location.start_line for a in dockerfile.meta_args]
        + [
            instruction.location.start_line
            for stage in dockerfile.stages
            for instruction in (stage.from_, *stage.instructions)
        ]
    )
    return {line: number for number, line in enumerate(lines)}
