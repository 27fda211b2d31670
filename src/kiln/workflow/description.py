"""A build description: atomic-reactor's build JSON, read from Python, JSON or YAML.

```yaml
source: {provider: git, uri: "https://...", provider_params: {git_commit: main}}
image: registry.example.com/team/app:1.0
backend: native                 # or docker
parent_registry: mirror.example.com:5000
target_registries: [registry.example.com]
prebuild_plugins:
  - {name: add_labels_in_dockerfile, args: {labels: {vendor: Example}}}
postbuild_plugins:
  - {name: tag_and_push}
```

Every key is checked: an unknown one is an error, as an unknown plugin argument is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.workflow.plugin import Phase, PluginSpec
from kiln.workflow.source import SourceSpec


class DescriptionError(KilnError):
    """A build description that is not well formed."""


@dataclass(frozen=True)
class RegistrySpec:
    """A registry to pull from or push to: ``host[:port]``, optionally with a namespace."""

    uri: str
    insecure: bool = False

    @property
    def host(self) -> str:
        return self.uri.removeprefix("https://").removeprefix("http://").split("/")[0]


@dataclass(frozen=True)
class BuildDescription:
    """Everything a workflow run needs to know, before anything runs."""

    source: SourceSpec
    image: str
    tags: tuple[str, ...] = ()  # more names for the image, any repository
    backend: str = "native"
    parent_registry: RegistrySpec | None = None
    target_registries: tuple[RegistrySpec, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    isolation: str | None = None
    plugins: Mapping[Phase, tuple[PluginSpec, ...]] = field(default_factory=dict)
    plugin_files: tuple[Path, ...] = ()

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], where: str = "build description"
    ) -> BuildDescription:
        known = {
            "source", "image", "tags", "backend", "parent_registry", "parent_registry_insecure",
            "target_registries", "target_registries_insecure", "build_args", "target",
            "no_cache", "isolation", "plugin_files", *(p.config_key for p in Phase),
        }  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise DescriptionError(f"{where}: unknown key(s) {', '.join(unknown)}")
        if not isinstance(data.get("source"), Mapping):
            raise DescriptionError(f"{where}: 'source' must be a mapping (provider, uri, ...)")
        image = data.get("image")
        if not isinstance(image, str) or not image:
            raise DescriptionError(f"{where}: 'image' must name the image to build")
        backend = data.get("backend", "native")
        if backend not in ("native", "docker"):
            raise DescriptionError(f"{where}: backend {backend!r}: expected native or docker")
        parent = data.get("parent_registry")
        targets = data.get("target_registries") or []
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise DescriptionError(f"{where}: 'target_registries' must be a list of registries")
        plugins: dict[Phase, tuple[PluginSpec, ...]] = {}
        for phase in Phase:
            entries = data.get(phase.config_key) or []
            if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
                raise DescriptionError(f"{where}: {phase.config_key} must be a list of plugins")
            plugins[phase] = tuple(
                PluginSpec.from_dict(entry, f"{where}: {phase.config_key}[{i}]")
                for i, entry in enumerate(entries)
            )
        tags = data.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DescriptionError(f"{where}: 'tags' must be a list of image names")
        build_args = data.get("build_args") or {}
        if not isinstance(build_args, Mapping):
            raise DescriptionError(f"{where}: 'build_args' must be a mapping")
        return cls(
            source=SourceSpec.from_dict(data["source"]),
            image=image,
            tags=tuple(tags),
            backend=backend,
            parent_registry=RegistrySpec(
                str(parent), bool(data.get("parent_registry_insecure"))
            ) if parent else None,
            target_registries=tuple(
                RegistrySpec(t, bool(data.get("target_registries_insecure"))) for t in targets
            ),
            build_args={str(k): str(v) for k, v in build_args.items()},
            target=str(data.get("target") or ""),
            no_cache=bool(data.get("no_cache")),
            isolation=data.get("isolation"),
            plugins=plugins,
            plugin_files=tuple(Path(p) for p in data.get("plugin_files") or []),
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> BuildDescription:
        """A description from a JSON or YAML file; plugin files it names relative to
        itself are found beside it."""
        from dataclasses import replace

        loaded = cls.from_dict(read_mapping(path), str(path))
        return replace(loaded, plugin_files=tuple(path.parent / p for p in loaded.plugin_files))

    def to_dict(self) -> dict[str, Any]:
        """The description as a JSON-ready dict that ``from_dict`` reads back."""
        data: dict[str, Any] = {
            "source": {
                "provider": self.source.provider, "uri": self.source.uri,
                "dockerfile_path": self.source.dockerfile_path,
                "provider_params": dict(self.source.provider_params),
            },
            "image": self.image, "tags": list(self.tags), "backend": self.backend,
            "build_args": dict(self.build_args),
            "target": self.target, "no_cache": self.no_cache, "isolation": self.isolation,
            "plugin_files": [str(p) for p in self.plugin_files],
        }  # fmt: skip
        if self.parent_registry:
            data["parent_registry"] = self.parent_registry.uri
            data["parent_registry_insecure"] = self.parent_registry.insecure
        if self.target_registries:
            data["target_registries"] = [r.uri for r in self.target_registries]
            data["target_registries_insecure"] = any(r.insecure for r in self.target_registries)
        for phase, specs in self.plugins.items():
            data[phase.config_key] = [
                {"name": s.name, "args": dict(s.args), "required": s.required,
                 **({"is_allowed_to_fail": s.is_allowed_to_fail}
                    if s.is_allowed_to_fail is not None else {})}
                for s in specs
            ]  # fmt: skip
        return data


def read_mapping(path: Path) -> dict[str, Any]:
    """A JSON or YAML file's top-level mapping, with a clear error when it is not one."""
    import yaml

    try:
        text = path.read_text()
    except OSError as err:
        raise DescriptionError(f"{path}: {err.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise DescriptionError(f"{path}: not valid {_kind(path)}: {_first_line(err)}") from None
    if not isinstance(data, dict):
        raise DescriptionError(f"{path}: expected a mapping at the top level")
    return data


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())
