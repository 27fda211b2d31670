"""Platforms (``linux/arm64``, ``linux/arm/v7``) as BuildKit and containerd spell them."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError

_KNOWN_OS = ("linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos")
# Aliases that containerd's platforms.Normalize folds to one spelling: arch -> (arch, variant).
_ARCH_ALIASES = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv7l": ("arm", "v7"),
    "i386": ("386", ""),
    "i686": ("386", ""),
}


class PlatformError(KilnError):
    """A platform string that does not name an OS and architecture."""


@dataclass(frozen=True)
class Platform:
    """An OS, CPU architecture and optional variant."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    @classmethod
    def host(cls) -> Platform:
        """The platform this process runs on (a build's default)."""
        return cls.parse(f"linux/{_host.machine()}")

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os[/arch[/variant]]``, or a bare architecture meaning linux."""
        parts = text.strip().lower().split("/")
        if not all(parts) or len(parts) > 3:
            raise PlatformError(f"invalid platform {text!r}: expected os/arch[/variant]")
        if len(parts) == 1:
            if parts[0] in _KNOWN_OS:
                return cls(parts[0], cls.host().architecture, cls.host().variant)
            parts = ["linux", parts[0]]
        os_name, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else ""
        if os_name not in _KNOWN_OS:
            raise PlatformError(f"invalid platform {text!r}: unknown operating system {os_name!r}")
        arch, implied_variant = _ARCH_ALIASES.get(arch, (arch, ""))
        variant = variant or implied_variant
        if arch == "arm64" and variant in ("8", "v8"):
            variant = ""
        if arch == "arm":
            variant = "v" + variant if variant.isdecimal() else variant or "v7"
        return cls(os_name, arch, variant)


# binfmt_misc handler names qemu-user-static registers, by OCI architecture.
_QEMU = {
    "arm64": "aarch64", "arm": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
    "riscv64": "riscv64", "386": "i386", "amd64": "x86_64", "mips64le": "mips64el",
}  # fmt: skip
_NATIVE_TOO = {"amd64": {"386"}, "arm64": {"arm"}}  # what a host runs without an emulator


def runs_here(platform: Platform, binfmt: Path = Path("/proc/sys/fs/binfmt_misc")) -> bool:
    """Whether this machine can run ``platform``'s programs: natively, or through an
    emulator registered with binfmt_misc (qemu-user-static)."""
    host = Platform.host().architecture
    if platform.architecture == host or platform.architecture in _NATIVE_TOO.get(host, ()):
        return True
    handler = binfmt / f"qemu-{_QEMU.get(platform.architecture, platform.architecture)}"
    try:
        return handler.read_text().startswith("enabled")
    except OSError:
        return False


def emulator_hint(platform: Platform) -> str:
    """How to make ``platform``'s programs run here."""
    name = _QEMU.get(platform.architecture, platform.architecture)
    return (
        f"install an emulator: apt-get install qemu-user-static binfmt-support (it registers "
        f"/proc/sys/fs/binfmt_misc/qemu-{name}), or docker run --privileged --rm "
        f"tonistiigi/binfmt --install {platform.architecture}"
    )
