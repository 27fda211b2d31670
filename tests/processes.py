"""Finding this machine's processes by command line, and mounts left behind."""

from __future__ import annotations

import time
from pathlib import Path


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
