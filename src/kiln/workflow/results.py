"""What a workflow did: a structured, JSON-serialisable record of the build and each plugin.

atomic-reactor kept plugin results in a dict keyed by plugin name and stored exception
objects as results; here every plugin run is a ``PluginRun`` with its own error text, and
the build's outcome is a ``BuildResults`` a caller (or a process outside the buildroot
container) can read back with ``BuildResults.from_json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PluginRun:
    """One plugin's run: when, how long, what it returned or why it failed."""

    key: str
    phase: str
    started: float  # seconds since the epoch
    duration: float = 0.0
    result: Any = None  # the plugin's result, as JSON-ready data
    error: str | None = None
    allowed_to_fail: bool = False
    skipped: str | None = None  # why the plugin did not run (not installed, not required)

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class PushedImage:
    """A name pushed to a registry and the manifest digest the registry holds for it."""

    name: str
    digest: str


@dataclass
class BuildResults:
    """Everything a caller needs to know of one workflow run."""

    image: str  # the name asked for
    source_uri: str = ""
    commit: str = ""  # the git commit the source resolved to
    base_image: str = ""  # the final stage's base, as written in the Dockerfile
    base_image_id: str = ""
    image_id: str = ""  # the built image's ID (its config digest)
    image_digest: str = ""  # its manifest digest in the local store ("" on a Docker engine)
    tags: list[str] = field(default_factory=list)
    pushed: dict[str, list[PushedImage]] = field(default_factory=dict)  # per registry
    dockerfile: str = ""  # the Dockerfile as built, after plugins edited it
    logs: list[str] = field(default_factory=list)
    plugins: list[PluginRun] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started: float = 0.0
    duration: float = 0.0
    failed: bool = False
    cancelled: bool = False
    error: str | None = None  # why the build failed, one line per failure

    def plugin(self, key: str) -> PluginRun | None:
        """The run of plugin ``key``, if it ran (the last one when it ran twice)."""
        return next((run for run in reversed(self.plugins) if run.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, default=str)

    def write(self, path: Path) -> None:
        """Replace ``path`` with these results in one step: a reader sees the old file or
        the new one, never half of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildResults:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["plugins"] = [PluginRun(**run) for run in data.get("plugins") or []]
        values["pushed"] = {
            registry: [PushedImage(**image) for image in images]
            for registry, images in (data.get("pushed") or {}).items()
        }
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> BuildResults:
        return cls.from_dict(json.loads(text))


def to_data(value: Any) -> Any:
    """A plugin's result as JSON-ready data: dataclasses become dicts, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_data(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_data(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
