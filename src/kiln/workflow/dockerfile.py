"""The workflow's own copy of the Dockerfile: where its FROMs are, and small edits to it.

Plugins pin base images, add labels or files by editing this copy (never the source's own
Dockerfile); the text it ends with is what gets built and recorded in ``BuildResults``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kiln.dockerfile import ShellLex, load_dockerfile
from kiln.dockerfile.shell import ShellError
from kiln.errors import KilnError


@dataclass(frozen=True)
class FromLine:
    """One stage's FROM: where it is and which base it names, build args expanded."""

    stage: int
    line: int  # 1-based, the first of the FROM's lines
    end_line: int
    base: str
    stage_name: str
    platform: str
    origin: str  # the image this stage ultimately starts from ("scratch" for none)

    @property
    def is_image(self) -> bool:
        """Whether ``base`` names an image (not an earlier stage, not scratch)."""
        return self.base == self.origin and self.base != "scratch"


class EditableDockerfile:
    """A Dockerfile on disk, re-read after every edit so its positions stay true."""

    def __init__(self, path: Path, build_args: Mapping[str, str]) -> None:
        self.path = path
        self.build_args = dict(build_args)

    @property
    def text(self) -> str:
        return self.path.read_text()

    def froms(self) -> list[FromLine]:
        document = load_dockerfile(self.path)
        lex = ShellLex(document.escape)
        values: dict[str, str] = {}
        for arg in document.meta_args:
            for definition in arg.args:
                if definition.key in self.build_args:
                    values[definition.key] = self.build_args[definition.key]
                elif definition.default is not None:
                    values[definition.key] = self._expand(lex, definition.default, values)
        found: list[FromLine] = []
        origins: dict[str, str] = {}
        for stage in document.stages:
            base = self._expand(lex, stage.from_.base, values)
            origin = origins.get(base.lower(), base)
            if base.isdigit() and int(base) < len(found):
                origin = found[int(base)].origin
            found.append(FromLine(
                stage.index, stage.from_.location.start_line, stage.from_.location.end_line,
                base, stage.from_.stage_name,
                stage.from_.platform, origin,
            ))  # fmt: skip
            if stage.from_.stage_name:
                origins[stage.from_.stage_name.lower()] = origin
        return found

    def _expand(self, lex: ShellLex, word: str, values: Mapping[str, str]) -> str:
        try:
            return lex.expand(word, values).result
        except ShellError as err:
            raise KilnError(f"{self.path}: {err}") from None

    @property
    def base_image(self) -> str:
        """The image the final stage starts from."""
        froms = self.froms()
        return froms[-1].origin if froms else ""

    def parent_images(self) -> list[str]:
        """Each distinct image a FROM names, in order."""
        return list(dict.fromkeys(f.base for f in self.froms() if f.is_image))

    def replace_base(self, old: str, new: str) -> int:
        """Point every FROM of image ``old`` at ``new``; how many were changed."""
        lines = self.text.splitlines(keepends=True)
        changed = 0
        for found in reversed(self.froms()):  # from the end: earlier line numbers stay true
            if found.is_image and found.base == old:
                platform = f" --platform={found.platform}" if found.platform else ""
                name = f" AS {found.stage_name}" if found.stage_name else ""
                lines[found.line - 1 : found.end_line] = [f"FROM{platform} {new}{name}\n"]
                changed += 1
        self.path.write_text("".join(lines))
        return changed

    def append(self, *instructions: str) -> None:
        """Add instructions at the end: to the final stage."""
        text = self.text
        if text and not text.endswith("\n"):
            text += "\n"
        self.path.write_text(text + "".join(line + "\n" for line in instructions))
