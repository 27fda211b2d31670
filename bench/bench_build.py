"""Benchmark: kiln build against BuildKit on the same app, cold, no-op and one-file rebuilds.

Not a test. Needs root, runc, busybox-static and Debian's docker.io (for BuildKit in a private
dockerd this script starts and stops). Run: ``.venv/bin/python bench/bench_build.py``.

The app context has about 20,000 files / 130 MB; the Dockerfile has two COPY and two RUN
steps, one RUN writing 2,000 files / 32 MB. Prints each time and the ratio kiln/BuildKit.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DOCKER = "/usr/bin/docker"
DOCKERFILE = """\
FROM busybox:bench
COPY vendor/ /app/vendor/
RUN mkdir -p /gen && i=0 && while [ $i -lt 2000 ]; do \\
      head -c 16384 /dev/urandom > /gen/f$i; i=$((i+1)); done
COPY src/ /app/src/
RUN find /app -type f | wc -l > /app/count
"""


def generate_context(root: Path, files: int, total_bytes: int) -> None:
    rng = random.Random(11)
    sizes = [rng.lognormvariate(8, 1.6) for _ in range(files)]
    scale = total_bytes / sum(sizes)
    block = rng.randbytes(1 << 20)
    for i, raw in enumerate(sizes):
        size = max(1, min(int(raw * scale), 4 << 20))
        top = "src" if i % 20 == 0 else "vendor"  # 5% of the files are the app's own sources
        path = root / top / f"pkg{i % 37:02d}" / f"mod{(i // 37) % 9}" / f"file{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (i.to_bytes(4, "big") + block * (size // len(block) + 1))[:size]
        path.write_bytes(data)
    (root / "Dockerfile").write_text(DOCKERFILE)


def busybox_rootfs(root: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox-static is not installed")
    for directory in ("bin", "etc", "tmp", "root"):
        (root / directory).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in subprocess.run(
        [busybox, "--list"], capture_output=True, text=True
    ).stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "tmp").chmod(0o1777)


class Dockerd:
    def __init__(self, base: Path) -> None:
        self.short = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))
        self.host = f"unix://{self.short}/docker.sock"
        self.process = subprocess.Popen(
            ["dockerd", "--data-root", str(base / "docker"), "--exec-root",
             str(self.short / "exec"), "--pidfile", str(self.short / "pid"), "--host", self.host,
             "--bridge", "none", "--iptables=false", "--ip-masq=false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("dockerd did not start")
            time.sleep(0.2)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKER, "-H", self.host, *args],
            capture_output=True,
            text=True,
            check=check,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        shutil.rmtree(self.short, ignore_errors=True)


def settle(context: Path, page_cache: str) -> None:
    """Untimed, before every build, so that both tools start alike: the last build's
    writeback flushed, its background work (dockerd's, after a BuildKit build) given time
    to end, and the page cache either dropped ("cold") or holding the whole context
    ("warm"). This VM's memory manager evicts the page cache within seconds: without
    this, whichever tool ran second would read the context from disk."""
    os.sync()
    if page_cache == "cold":
        with contextlib.suppress(OSError):
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(1)
    if page_cache == "warm":
        for path in context.rglob("*"):
            if path.is_file():
                path.read_bytes()


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=130)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each rebuild")
    parser.add_argument(
        "--page-cache", choices=["warm", "cold"], default="warm",
        help="warm: the context is in memory before each build; cold: nothing is",
    )  # fmt: skip
    args = parser.parse_args()
    kiln = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "kiln")
    with tempfile.TemporaryDirectory(prefix="kiln-bench-", dir="/var/tmp") as scratch:
        base = Path(scratch)
        context, rootfs = base / "context", base / "rootfs"
        generate_context(context, args.files, args.megabytes * 1_000_000)
        busybox_rootfs(rootfs)
        env = {**os.environ, "KILN_ROOT": str(base / "kiln")}

        def kiln_run(*command: str) -> None:
            subprocess.run([kiln, *command], env=env, check=True, capture_output=True)

        kiln_run("import", str(rootfs), "busybox:bench")
        kiln_run("save", "-o", str(base / "busybox.tar"), "busybox:bench")
        dockerd = Dockerd(base)
        try:
            dockerd.docker("load", "-i", str(base / "busybox.tar"))

            def buildkit(*flags: str) -> None:
                dockerd.docker(
                    "build", "-q", "--network=host", *flags, "-t", "bench:1", str(context)
                )

            def kiln_build(*flags: str) -> None:
                kiln_run("build", "-q", *flags, "-t", "bench:1", str(context))

            changed = next((context / "src").rglob("*.py"))
            results = []
            for label, prepare, flags, repeat in (
                ("first build", lambda: None, (), 1),
                ("cold build (--no-cache)", lambda: None, ("--no-cache",), args.repeat),
                ("no-op rebuild", lambda: None, (), args.repeat),
                ("one source file changed", lambda: changed.write_bytes(os.urandom(64)), (),
                 args.repeat),
            ):  # fmt: skip
                kiln_times, buildkit_times = [], []
                for _ in range(repeat):
                    prepare()
                    settle(context, args.page_cache)
                    buildkit_times.append(timed(functools.partial(buildkit, *flags)))
                    settle(context, args.page_cache)
                    kiln_times.append(timed(functools.partial(kiln_build, *flags)))
                results.append((label, kiln_times, buildkit_times))
        finally:
            dockerd.stop()
    print(f"context: {args.files} files, {args.megabytes} MB; Dockerfile: 2 COPY, 2 RUN")
    print(f"each line: the median of its runs (fastest-slowest); up to {args.repeat} runs")
    print(f"page cache before each build: {args.page_cache}")
    print(f"{'':26} {'kiln':>20} {'BuildKit':>20} {'kiln/BuildKit':>14}")
    for label, kiln_times, buildkit_times in results:
        kiln_time, buildkit_time = statistics.median(kiln_times), statistics.median(buildkit_times)
        print(
            f"{label:26} {_spread(kiln_times):>20} {_spread(buildkit_times):>20} "
            f"{kiln_time / buildkit_time:14.2f}"
        )


def _spread(times: list[float]) -> str:
    return f"{statistics.median(times):.2f}s ({min(times):.2f}-{max(times):.2f})"


if __name__ == "__main__":
    main()
