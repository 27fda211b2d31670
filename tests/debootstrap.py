"""Debian root filesystems made with debootstrap, kept as tars so later runs reuse them."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

import pytest


def debootstrap_tar(cached: Path, include: tuple[str, ...] = ()) -> Path:
    """A bookworm minbase (plus ``include``d packages) as the tar ``cached``: made once per
    machine (about 40 s, a minute with packages), one xdist worker at a time."""
    if cached.exists():
        return cached
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (.ci/run installs it)")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker bootstraps, the others wait
        if cached.exists():
            return cached
        target = cached.with_suffix(".partial")
        shutil.rmtree(target, ignore_errors=True)
        packages = [f"--include={','.join(include)}"] if include else []
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", *packages, "bookworm", str(target),
             "http://deb.debian.org/debian"],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"debootstrap failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (target / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = cached.with_suffix(".tar.partial")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(target), "-cf", str(partial), "."],
            check=True,
        )
        partial.replace(cached)
        shutil.rmtree(target, ignore_errors=True)
    return cached
