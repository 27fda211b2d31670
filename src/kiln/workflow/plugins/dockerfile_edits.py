"""Pre-build edits of the workflow's Dockerfile: labels, the Dockerfile itself into the
image, and files that RUN steps see but the image never holds."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.workflow.plugin import Phase, Plugin

AUTOMATIC_LABELS = ("build-date", "vcs-ref", "vcs-url", "vcs-type", "architecture")


@dataclass(frozen=True)
class LabelArgs:
    labels: dict[str, str] = field(default_factory=dict)
    auto_labels: list[str] = field(default_factory=lambda: list(AUTOMATIC_LABELS))


@dataclass(frozen=True)
class AddedLabels:
    labels: dict[str, str]


class AddLabelsInDockerfile(Plugin[LabelArgs, AddedLabels]):
    """Append a LABEL with the configured labels and the automatic ones: when the image was
    built, from which commit of which repository, for which architecture."""

    key = "add_labels_in_dockerfile"
    phases = frozenset({Phase.PRE_BUILD})

    def run(self) -> AddedLabels:
        unknown = sorted(set(self.args.auto_labels) - set(AUTOMATIC_LABELS))
        if unknown:
            raise KilnError(
                f"unknown automatic label(s) {', '.join(unknown)} "
                f"(known: {', '.join(AUTOMATIC_LABELS)})"
            )
        source = self.workflow.source
        automatic = {
            "build-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "architecture": platform.machine(),
            **({"vcs-ref": source.commit, "vcs-url": source.spec.uri, "vcs-type": "git"}
               if source.commit else {}),
        }  # fmt: skip
        labels = {k: v for k, v in automatic.items() if k in self.args.auto_labels}
        labels.update(self.args.labels)
        if labels:
            self.workflow.dockerfile.append(
                "LABEL " + " ".join(f"{quote(k)}={quote(v)}" for k, v in labels.items())
            )
        return AddedLabels(labels)


def quote(text: str) -> str:
    """``text`` as one Dockerfile word, taken literally (no ``$`` expansion)."""
    if "\n" in text or "\r" in text:
        raise KilnError(f"a label cannot hold a line break: {text!r}")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


@dataclass(frozen=True)
class AddDockerfileArgs:
    nvr: str | None = None  # the file's name suffix; default: the image's name and tag
    destdir: str = "/root/buildinfo/"


@dataclass(frozen=True)
class AddedDockerfile:
    path: str  # where the image holds it


class AddDockerfile(Plugin[AddDockerfileArgs, AddedDockerfile]):
    """Put the Dockerfile (as the plugins before this one left it) into the image, as
    ``/root/buildinfo/Dockerfile-NAME-TAG``: a record of how the image was made."""

    key = "add_dockerfile"
    phases = frozenset({Phase.PRE_BUILD})

    def run(self) -> AddedDockerfile:
        workflow = self.workflow
        nvr = self.args.nvr
        if nvr is None:
            reference = Reference.parse(workflow.description.image)
            nvr = f"{reference.repository.rsplit('/', 1)[-1]}-{reference.tag or 'latest'}"
        if "/" in nvr or nvr in ("", ".", ".."):
            raise KilnError(f"nvr {nvr!r}: it must be usable as a file name")
        name = f"Dockerfile-{nvr}"
        in_context = workflow.add_context_file(f".kiln-buildinfo/{name}",
                                               workflow.dockerfile.text.encode())  # fmt: skip
        target = str(PurePosixPath(self.args.destdir) / name)
        if not PurePosixPath(target).is_absolute():
            raise KilnError(f"destdir {self.args.destdir!r} must be an absolute path")
        workflow.dockerfile.append(f"COPY {in_context} {target}")
        return AddedDockerfile(target)


@dataclass(frozen=True)
class InjectArgs:
    files: dict[str, str] = field(default_factory=dict)  # path in the image -> content
    paths: dict[str, str] = field(default_factory=dict)  # path in the image -> host file


@dataclass(frozen=True)
class InjectedFiles:
    paths: list[str]


class InjectFiles(Plugin[InjectArgs, InjectedFiles]):
    """Make files (package repository definitions, say) visible to every RUN step, mounted
    read-only for the build and absent from every layer of the image."""

    key = "inject_files"
    phases = frozenset({Phase.PRE_BUILD})

    def run(self) -> InjectedFiles:
        from kiln.engine.executor import Volume

        workflow = self.workflow
        directory = workflow.workdir / "inject"
        targets = [*self.args.files, *self.args.paths]
        for target in targets:
            if not PurePosixPath(target).is_absolute():
                raise KilnError(f"{target!r}: a path in the image must be absolute")
        for number, (target, content) in enumerate(self.args.files.items()):
            directory.mkdir(exist_ok=True)
            host = directory / f"{number}-{PurePosixPath(target).name}"
            host.write_text(content)
            workflow.shared.volumes.append(Volume(host, target, readonly=True))
        for target, path in self.args.paths.items():
            host = Path(path)
            if not host.exists():
                raise KilnError(f"{path}: no such file to inject at {target}")
            workflow.shared.volumes.append(Volume(host.resolve(), target, readonly=True))
        return InjectedFiles(targets)
