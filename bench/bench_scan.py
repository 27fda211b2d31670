"""Benchmark: scan a generated build context of 20,000 files (~130 MB), cold and warm.

Not a test: run it by hand (``.venv/bin/python bench/bench_scan.py [DIR]``). The first scan
reads and digests every file; the re-scan finds every digest in the stat cache and should
cost about one ``lstat`` per file.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from kiln.context import DigestCache, PatternMatcher, scan_context
from kiln.context import scan as scan_module


def generate(root: Path, files: int, total_bytes: int, seed: int = 7) -> int:
    """A deterministic tree: 40 top dirs, 10 subdirs each, mixed sizes; returns bytes."""
    rng = random.Random(seed)
    sizes = [rng.lognormvariate(8, 1.6) for _ in range(files)]
    scale = total_bytes / sum(sizes)
    block = rng.randbytes(1 << 20)
    written = 0
    past = time.time() - 3600  # old enough that every digest may be cached
    for i, raw in enumerate(sizes):
        size = max(1, min(int(raw * scale), 8 << 20))
        path = root / f"pkg{i % 40:02d}" / f"mod{(i // 40) % 10}" / f"file{i:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(i.to_bytes(4, "big"))
            remaining = size - 4
            while remaining > 0:
                f.write(block[: min(remaining, len(block))])
                remaining -= len(block)
        os.utime(path, (past, past))
        written += max(size, 4)
    return written


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(label: str, root: Path, cache: DigestCache, ignore: PatternMatcher | None) -> None:
    start = time.perf_counter()
    snapshot = scan_context(root, ignore, cache)
    elapsed = time.perf_counter() - start
    mb = snapshot.hashed_bytes / 1e6
    rate = f"{mb / elapsed:7.1f} MB/s hashed" if snapshot.hashed_files else ""
    print(
        f"{label:<30} {elapsed:7.3f} s  {len(snapshot):6d} entries  "
        f"{snapshot.hashed_files:6d} files hashed ({mb:6.1f} MB)  {rate}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", nargs="?", type=Path, help="where to generate (default: a temp dir)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=130)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as scratch:
        root = (args.dir or Path(scratch)) / "context"
        if not root.exists():
            start = time.perf_counter()
            size = generate(root, args.files, args.megabytes * 1_000_000)
            print(f"generated {args.files} files, {size / 1e6:.1f} MB "
                  f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
        cache = DigestCache(Path(scratch) / "context.db")
        cold = drop_page_cache()
        timed("first scan" + (" (cold page cache)" if cold else ""), root, cache, None)
        fresh = DigestCache(Path(scratch) / "fresh.db")
        timed("first scan (warm page cache)", root, fresh, None)
        fresh.close()
        timed("re-scan (unchanged)", root, cache, None)
        timed("re-scan (unchanged)", root, cache, None)
        changed = next(path for path in root.rglob("*") if path.is_file())
        changed.write_bytes(changed.read_bytes()[::-1])
        timed("re-scan (one file changed)", root, cache, None)
        ignore = PatternMatcher(["pkg1*", "!pkg12/mod3"])
        timed("re-scan with .dockerignore", root, cache, ignore)
        scan_module.FIND = "/nonexistent"  # where no GNU find is installed
        timed("re-scan, Python walk", root, cache, None)
        cache.close()


if __name__ == "__main__":
    main()
