"""Base images: pulled before the build (from a parent registry if one is set), and the
Dockerfile's FROMs pinned to the digests that were pulled."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.workflow.plugin import NoArgs, Phase, Plugin


@dataclass(frozen=True)
class PullArgs:
    parent_registry: str | None = None  # default: the build description's
    parent_registry_insecure: bool = False


@dataclass(frozen=True)
class PulledBase:
    name: str  # as the Dockerfile names it
    pulled_from: str  # the reference fetched (the parent registry's, when one is set)
    id: str
    digest: str  # the manifest digest the registry gave


@dataclass(frozen=True)
class PulledBases:
    images: list[PulledBase] = field(default_factory=list)


class PullBaseImage(Plugin[PullArgs, PulledBases]):
    """Pull every image the Dockerfile's FROMs name and keep it under that name, so that the
    build uses exactly what was pulled."""

    key = "pull_base_image"
    phases = frozenset({Phase.PRE_BUILD})

    def run(self) -> PulledBases:
        workflow = self.workflow
        parent = self.args.parent_registry
        insecure = self.args.parent_registry_insecure
        if parent is None and workflow.parent_registry is not None:
            parent, insecure = workflow.parent_registry.host, workflow.parent_registry.insecure
        pulled = []
        for name in workflow.dockerfile.parent_images():
            wanted = Reference.parse(name)
            source = replace(wanted, registry=parent) if parent else wanted
            self.log(f"pulling {source}")
            info = workflow.engine.pull(str(source), insecure, workflow.log)
            if source != wanted and not wanted.digest:
                workflow.engine.tag(str(source), str(wanted))
            digest = info.digest or _repo_digest(info.repo_digests, source)
            pulled.append(PulledBase(name, str(source), info.id, digest))
            if name == workflow.dockerfile.base_image:
                workflow.results.base_image_id = info.id
        return PulledBases(pulled)


@dataclass(frozen=True)
class PinnedBases:
    pinned: dict[str, str] = field(default_factory=dict)  # FROM as written -> as built


class ChangeFromInDockerfile(Plugin[NoArgs, PinnedBases]):
    """Point each FROM at the exact image pulled for it (``name@sha256:...``), so that the
    Dockerfile that is built and recorded names what was used, whatever a tag says later."""

    key = "change_from_in_dockerfile"
    phases = frozenset({Phase.PRE_BUILD})

    def run(self) -> PinnedBases:
        workflow = self.workflow
        pulled = workflow.result_of(PullBaseImage)
        targets: dict[str, str] = {}
        if pulled is not None:
            for base in pulled.images:
                if base.digest:
                    targets[base.name] = f"{Reference.parse(base.pulled_from).name}@{base.digest}"
        for name in workflow.dockerfile.parent_images():
            if name in targets or "@" in name:
                continue
            info = workflow.engine.inspect(name)  # not pulled here: pin what is there
            wanted = Reference.parse(name)
            digest = info.digest or _repo_digest(info.repo_digests, wanted)
            if not digest:
                raise KilnError(
                    f"cannot pin FROM {name}: the engine knows no digest for it (pull it "
                    "from a registry first, e.g. with pull_base_image)"
                )
            targets[name] = f"{wanted.name}@{digest}"
        for old, new in targets.items():
            workflow.dockerfile.replace_base(old, new)
            self.log(f"FROM {old} -> {new}")
        return PinnedBases(targets)


def _repo_digest(repo_digests: tuple[str, ...], reference: Reference) -> str:
    """The digest a Docker engine recorded for ``reference``'s repository."""
    for entry in repo_digests:
        name, _, digest = entry.partition("@")
        if Reference.parse(name).name == reference.name:
            return digest
    return repo_digests[0].partition("@")[2] if repo_digests else ""
