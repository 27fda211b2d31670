"""Names for the built image, and publishing it under them to each target registry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.workflow.description import RegistrySpec, read_mapping
from kiln.workflow.plugin import Phase, Plugin
from kiln.workflow.results import PushedImage


@dataclass(frozen=True)
class TagFromConfigArgs:
    tags: list[str] = field(default_factory=list)
    config_file: str = "container.yaml"  # in the source, next to the Dockerfile; optional


@dataclass(frozen=True)
class Tags:
    names: list[str]


class TagFromConfig(Plugin[TagFromConfigArgs, Tags]):
    """Tag the image's repository with the configured tags and those a ``tags:`` list in
    the source's ``container.yaml`` names."""

    key = "tag_from_config"
    phases = frozenset({Phase.POST_BUILD})

    def run(self) -> Tags:
        workflow = self.workflow
        tags = list(self.args.tags)
        config = workflow.source.dockerfile.parent / self.args.config_file
        if config.is_file():
            listed = read_mapping(config).get("tags") or []
            if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
                raise KilnError(f"{config}: 'tags' must be a list of strings")
            tags += listed
        repository = Reference.parse(workflow.description.image)
        names = [str(replace(repository, tag=tag, digest="")) for tag in dict.fromkeys(tags)]
        workflow.add_tags(names)
        return Tags(names)


@dataclass(frozen=True)
class TagByLabelsArgs:
    unique_tag: str | None = None  # one more tag, for this build only
    floating: bool = True  # also NAME:VERSION and NAME:latest


class TagByLabels(Plugin[TagByLabelsArgs, Tags]):
    """Tags from the image's ``name``, ``version`` and ``release`` labels:
    ``NAME:VERSION-RELEASE``, and (floating) ``NAME:VERSION`` and ``NAME:latest``."""

    key = "tag_by_labels"
    phases = frozenset({Phase.POST_BUILD})

    def run(self) -> Tags:
        workflow = self.workflow
        labels = workflow.engine.inspect(workflow.built_image).labels
        missing = [k for k in ("name", "version", "release") if not labels.get(k)]
        if missing:
            raise KilnError(f"cannot tag by labels: the image has no {', '.join(missing)} label")
        name, version, release = labels["name"], labels["version"], labels["release"]
        tags = [f"{version}-{release}"]
        if self.args.unique_tag:
            tags.append(self.args.unique_tag)
        if self.args.floating:
            tags += [version, "latest"]
        names = [str(Reference.parse(f"{name}:{tag}")) for tag in tags]
        workflow.add_tags(names)
        return Tags(names)


@dataclass(frozen=True)
class PushArgs:
    registries: dict[str, dict[str, bool]] | None = None  # {"host:port": {"insecure": true}}


@dataclass(frozen=True)
class Pushed:
    images: list[PushedImage]


class TagAndPush(Plugin[PushArgs, Pushed]):
    """Push the image under its name and every tag given to it: into each target registry
    (the names' repositories kept), or, with none configured, to the registry each name
    names. Every pushed digest is recorded per registry."""

    key = "tag_and_push"
    phases = frozenset({Phase.POST_BUILD})

    def run(self) -> Pushed:
        workflow = self.workflow
        image = workflow.built_image
        registries = (
            [RegistrySpec(uri, bool(options.get("insecure")))
             for uri, options in self.args.registries.items()]
            if self.args.registries is not None else list(workflow.target_registries)
        )  # fmt: skip
        names = [Reference.parse(n) for n in dict.fromkeys([workflow.description.image,
                                                            *workflow.shared.tags])]  # fmt: skip
        pushed = []
        for reference in names:
            targets = [(replace(reference, registry=r.host), r.insecure) for r in registries]
            for target, insecure in targets or [(reference, False)]:
                workflow.engine.tag(image, str(target))
                self.log(f"pushing {target}")
                digest = workflow.engine.push(str(target), insecure, workflow.log)
                workflow.record_push(target.registry, str(target), digest)
                pushed.append(PushedImage(str(target), digest))
        return Pushed(pushed)
