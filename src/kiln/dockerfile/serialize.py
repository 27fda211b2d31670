"""A Dockerfile's typed instructions as plain JSON-ready data (``kiln parse --format json``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from kiln.dockerfile.document import Dockerfile
from kiln.dockerfile.instructions import Instruction


def instruction_to_dict(instruction: Instruction) -> dict[str, Any]:
    """``{"instruction": "RUN", "start_line": .., "end_line": .., <fields>}``."""
    data: dict[str, Any] = {
        "instruction": instruction.name,
        "start_line": instruction.location.start_line,
        "end_line": instruction.location.end_line,
        "source": instruction.source,
    }
    for field in dataclasses.fields(instruction):
        if field.name in ("keyword", "source", "location"):
            continue
        value = getattr(instruction, field.name)
        data[field.name.rstrip("_")] = _plain(value)
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Instruction):
        return instruction_to_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name.rstrip("_"): _plain(getattr(value, f.name)) for f in fields}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def dockerfile_to_dict(dockerfile: Dockerfile) -> dict[str, Any]:
    directives = dockerfile.directives
    return {
        "file": dockerfile.file,
        "directives": {
            "escape": directives.escape,
            "syntax": directives.syntax.value if directives.syntax else None,
            "check": directives.check.value if directives.check else None,
        },
        "meta_args": [instruction_to_dict(arg) for arg in dockerfile.meta_args],
        "stages": [
            {
                "index": stage.index,
                "name": stage.name,
                "from": instruction_to_dict(stage.from_),
                "instructions": [instruction_to_dict(i) for i in stage.instructions],
            }
            for stage in dockerfile.stages
        ],
        "warnings": [{"line": w.line, "message": w.message} for w in dockerfile.warnings],
    }
