"""Image references in Docker's grammar: ``[registry/]path[:tag][@digest]``.

``busybox`` is ``docker.io/library/busybox:latest`` in full and ``busybox:latest`` in its
familiar form, as the docker CLI shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kiln.errors import KilnError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# Other names of Docker Hub, folded to docker.io as the docker CLI folds them.
_HUB_ALIASES = {"index.docker.io": DEFAULT_REGISTRY, "registry-1.docker.io": DEFAULT_REGISTRY}

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}\Z")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?\Z")


class ReferenceError(KilnError):
    """A string that is not a valid image reference."""


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise; a reference without tag or digest gets ``latest``."""
        rest, _, digest = text.partition("@")
        if digest and not _DIGEST.match(digest):
            raise ReferenceError(f"invalid reference {text!r}: bad digest {digest!r}")
        name, tag = rest, ""
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            name, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG.match(tag):
                raise ReferenceError(f"invalid reference {text!r}: bad tag {tag!r}")
        first, slash, remainder = name.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
            if not _DOMAIN.match(registry):
                raise ReferenceError(f"invalid reference {text!r}: bad registry {registry!r}")
        else:
            registry, path = DEFAULT_REGISTRY, name
        registry = _HUB_ALIASES.get(registry, registry)
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = "library/" + path
        if not _PATH.match(path):
            raise ReferenceError(
                f"invalid reference {text!r}: repository names must be lowercase "
                "letters, digits and separators (. _ __ -)"
            )
        if not tag and not digest:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest)

    @property
    def name(self) -> str:
        """``registry/repository``: the full name without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    @property
    def familiar(self) -> str:
        """As the docker CLI prints it: ``busybox:latest``, ``localhost:5000/app:1``."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository.removeprefix("library/")
        text = name + (":" + self.tag if self.tag else "")
        return text + ("@" + self.digest if self.digest else "")
