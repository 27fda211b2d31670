"""Squash: the layers the build added merged into one, as ``docker build --squash``."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import KilnError
from kiln.workflow.plugin import Phase, Plugin


@dataclass(frozen=True)
class SquashArgs:
    keep_layers: int | None = None  # default: the base image's layers stay as they are


@dataclass(frozen=True)
class Squashed:
    image_id: str
    layers_before: int
    layers_after: int


class Squash(Plugin[SquashArgs, Squashed]):
    """Merge the built image's layers above the base image's (or above the first
    ``keep_layers``) into one, so that files deleted by later steps are gone for good."""

    key = "squash"
    phases = frozenset({Phase.PRE_PUBLISH})

    def run(self) -> Squashed:
        workflow = self.workflow
        engine = workflow.engine
        image = workflow.built_image
        keep = self.args.keep_layers
        if keep is None:
            base = workflow.dockerfile.base_image
            keep = engine.layer_count(base) if base != "scratch" and engine.exists(base) else 0
        if keep < 0:
            raise KilnError(f"keep_layers must not be negative, not {keep}")
        before = engine.layer_count(image)
        squashed = engine.squash(image, keep, workflow.description.image)
        workflow.set_image(squashed, engine.inspect(squashed).digest)
        return Squashed(squashed, before, engine.layer_count(squashed))
