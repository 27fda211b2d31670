"""kiln as a process of its own, finding this machine's processes by command line, and
mounts left behind."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest


def kiln_command() -> str:
    """The kiln of the interpreter running the tests (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("kiln")
    if beside.exists():
        return str(beside)
    found = shutil.which("kiln")
    if found is None:
        pytest.skip("kiln is not installed in the tests' environment")
    return found


def processes(*argv: str) -> list[int]:
    """PIDs whose command line is exactly ``argv`` (containers' processes included)."""
    wanted = "\0".join(argv) + "\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_text(errors="replace") == wanted:
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return found


def wait_for_process(*argv: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not processes(*argv):
        if time.monotonic() > deadline:
            raise AssertionError(f"{' '.join(argv)} never started")
        time.sleep(0.05)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``: what a clean exit leaves none of."""
    prefix = str(root)
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def program(name: str) -> str:
    """The path of an outside program a test checks kiln with (umoci, skopeo...); the test
    is skipped, saying so, where it is not installed (``scripts/bootstrap`` installs it)."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/bootstrap installs it, as root on Debian)")
    return found
