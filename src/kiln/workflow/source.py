"""Where a build's Dockerfile and context come from: a git repository or a local path.

The description is atomic-reactor's: ``{'provider': 'git'|'path', 'uri': ...,
'dockerfile_path': 'sub/dir/', 'provider_params': {'git_commit': ...}}``. A git source is
fetched shallowly where the server allows it (a branch, a tag, or a commit the server lets
clients ask for by name), fully otherwise, and the commit it resolved to is recorded. A path
source is used where it is, unmodified, or copied when ``provider_params['copy']`` is true.
"""

from __future__ import annotations

import shutil
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln import git
from kiln.errors import KilnError


class SourceError(KilnError):
    """A source that cannot be had: unreachable, no such commit, no Dockerfile."""


@dataclass(frozen=True)
class SourceSpec:
    """A build source, as atomic-reactor describes one."""

    provider: str  # "git" or "path"
    uri: str
    dockerfile_path: str = ""  # a directory (holding "Dockerfile") or a Dockerfile's path
    provider_params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceSpec:
        provider = str(data.get("provider", ""))
        if provider not in ("git", "path"):
            raise SourceError(f"source provider {provider!r}: expected 'git' or 'path'")
        if not data.get("uri"):
            raise SourceError("a source needs a 'uri'")
        return cls(
            provider, str(data["uri"]), str(data.get("dockerfile_path") or ""),
            dict(data.get("provider_params") or {}),
        )  # fmt: skip


@dataclass(frozen=True)
class Source:
    """A source made ready to build: its context directory, Dockerfile and (for git) the
    commit it resolved to."""

    spec: SourceSpec
    root: Path  # the checkout or the path itself
    context: Path
    dockerfile: Path
    commit: str = ""
    in_place: bool = False  # the user's own directory: to be read, never written


def prepare_source(spec: SourceSpec, workdir: Path) -> Source:
    """Fetch or locate ``spec`` (into ``workdir`` where a copy is needed)."""
    if spec.provider == "git":
        in_place = False
        root = workdir / "source"
        commit = _fetch_git(spec.uri, str(spec.provider_params.get("git_commit") or ""), root)
    else:
        root = _path_of(spec.uri)
        commit = ""
        in_place = not spec.provider_params.get("copy")
        if not in_place:
            copy = workdir / "source"
            shutil.copytree(root, copy, symlinks=True)
            root = copy
    context, dockerfile = _dockerfile(root, spec, commit)
    return Source(spec, root, context, dockerfile, commit, in_place)


def _path_of(uri: str) -> Path:
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in ("", "file") or (parsed.scheme == "file" and parsed.netloc):
        raise SourceError(f"path source {uri!r}: expected file:///absolute/path")
    path = Path(urllib.parse.unquote(parsed.path))
    if not path.is_absolute():
        raise SourceError(f"path source {uri!r}: the path must be absolute")
    if not path.is_dir():
        raise SourceError(f"path source {uri}: no such directory")
    return path


def _dockerfile(root: Path, spec: SourceSpec, commit: str) -> tuple[Path, Path]:
    where = (root / spec.dockerfile_path).resolve() if spec.dockerfile_path else root
    if not where.is_relative_to(root.resolve()):
        raise SourceError(f"dockerfile_path {spec.dockerfile_path!r} leaves the source")
    dockerfile = where if where.is_file() else where / "Dockerfile"
    if not dockerfile.is_file():
        at = f"{spec.uri}@{commit[:12]}" if commit else spec.uri
        shown = spec.dockerfile_path or "."
        raise SourceError(f"{at}: no Dockerfile at {shown!r}")
    return dockerfile.parent, dockerfile


def _fetch_git(uri: str, ref: str, root: Path) -> str:
    """Check ``uri`` out at ``ref`` (default: the remote's HEAD) into ``root``; the commit."""
    try:
        return git.fetch(uri, ref, root)
    except git.GitError as err:
        raise SourceError(str(err)) from None
