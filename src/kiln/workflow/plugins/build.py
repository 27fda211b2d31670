"""The build phase's default plugin: the Dockerfile, as edited so far, built by the engine."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.workflow.plugin import NoArgs, Phase, Plugin


@dataclass(frozen=True)
class BuiltImage:
    id: str
    digest: str  # the manifest digest in kiln's store; "" on a Docker engine


class Build(Plugin[NoArgs, BuiltImage]):
    """Build the image, give it the description's extra ``tags`` and record its ID (and, in
    kiln's store, its manifest digest)."""

    key = "build"
    phases = frozenset({Phase.BUILD})

    def run(self) -> BuiltImage:
        workflow = self.workflow
        image_id = workflow.engine.build(workflow.build_spec(), workflow.log)
        built = BuiltImage(image_id, workflow.engine.inspect(image_id).digest)
        workflow.set_image(built.id, built.digest)
        workflow.add_tags(list(workflow.description.tags))
        return built
