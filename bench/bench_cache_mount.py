"""Benchmark: what a ``RUN --mount=type=cache`` saves when a step runs again.

Not a test. Needs root, runc and busybox-static. Run:
``.venv/bin/python bench/bench_cache_mount.py``. The step stands for a package download or a
compiler cache: it makes 200 MB of "downloads" (random data, checksummed as a package
manager would) unless the cache already holds them, then uses them. Each build changes a
build arg, so the step itself runs every time; only the cache mount carries over. Without
the mount, every run pays the full cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_build import busybox_rootfs

KILN = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "kiln")
STEP = (
    "if [ ! -f {cache}/downloads ]; then "
    "dd if=/dev/urandom of={cache}/downloads bs=1M count=200 2>/dev/null && "
    "sha256sum {cache}/downloads > {cache}/downloads.sum; fi; "
    "sha256sum -c {cache}/downloads.sum > /dev/null && echo $N > /n"
)


def build(env: dict[str, str], context: Path, n: int) -> float:
    started = time.monotonic()
    command = [KILN, "build", "-q", "--build-arg", f"N={n}", "-t", "bench:cache", str(context)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kiln-bench-cache-") as scratch:
        root = Path(scratch)
        busybox_rootfs(root / "rootfs")
        env = {**os.environ, "KILN_ROOT": str(root / "store")}
        subprocess.run([KILN, "import", str(root / "rootfs"), "busybox:bench"], env=env,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        results = {}
        for name, mount, cache in (
            ("with a cache mount", "--mount=type=cache,target=/cache ", "/cache"),
            ("without", "", "/tmp"),
        ):
            context = root / name.replace(" ", "-")
            context.mkdir()
            (context / "Dockerfile").write_text(
                f"FROM busybox:bench\nARG N\nRUN {mount}{STEP.format(cache=cache)}\n"
            )
            results[name] = [build(env, context, n) for n in range(4)]
        for name, times in results.items():
            later = sorted(times[1:])[1]
            print(f"{name:20} first {times[0]:5.2f} s, later runs (median) {later:5.2f} s")


if __name__ == "__main__":
    sys.exit(main())
