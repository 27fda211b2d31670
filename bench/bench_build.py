"""Benchmark: kiln build against BuildKit on the same contexts: cold, no-op and one-file
rebuilds.

Not a test. Needs root, runc, busybox-static and Debian's docker.io (for BuildKit in a private
dockerd this script starts and stops). Run: ``.venv/bin/python bench/bench_build.py``
(``--shape app|service|bigcopy|all``).

Shapes:
- ``app``: a context of 20,000 files / 130 MB; two COPY and two RUN steps, one RUN writing
  2,000 files / 32 MB; the changed file is one of the app's own sources.
- ``service``: a Python service as people write them: ``WORKDIR``, ``COPY requirements.txt``,
  a RUN standing for the dependency install, ``COPY . .`` of 3,000 files / 40 MB with a
  ``.dockerignore``, a RUN after it; the change is one line of ``service/api/handlers.py``.
- ``bigcopy``: FROM a Debian minbase (the tests' cached debootstrap, where there is one;
  busybox otherwise), ``COPY deps/`` of 400 files, a RUN writing 2,000 files / 32 MB, one
  ``COPY src/`` of 20,000 files / 79 MB, a RUN reading it, LABEL, USER, CMD; the change is a
  line appended to one file under ``src/``.
Prints each time and the ratio kiln/BuildKit.
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
DEBIAN_MINBASE = Path(os.environ.get("KILN_TEST_CACHE", "/var/cache/kiln-tests")) / (
    "bookworm-minbase.tar"
)
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


SERVICE_DOCKERFILE = """\
FROM busybox:bench
WORKDIR /srv/app
COPY requirements.txt ./
RUN mkdir -p /srv/venv && n=0 && while read -r line; do i=0; while [ $i -lt 60 ]; do \\
      echo "$line" > /srv/venv/dep$n-$i.py; i=$((i+1)); done; n=$((n+1)); \\
    done < requirements.txt
COPY . .
RUN find . -name '*.py' | wc -l > /srv/app/.count
CMD ["python", "-m", "service"]
"""

BIGCOPY_DOCKERFILE = """\
FROM {base}
COPY deps/ /app/deps/
RUN mkdir -p /gen && i=0 && while [ $i -lt 2000 ]; do \\
      head -c 16384 /dev/urandom > /gen/f$i; i=$((i+1)); done
COPY src/ /app/src/
RUN find /app/src -type f | wc -l
LABEL app=bench
USER nobody
CMD ["/bin/sh"]
"""


def _files(root: Path, rng: random.Random, paths: list[str], total_bytes: int) -> None:
    """``paths`` under ``root`` with log-normal sizes adding up to about ``total_bytes``."""
    sizes = [rng.lognormvariate(8, 1.5) for _ in paths]
    scale = total_bytes / sum(sizes)
    block = rng.randbytes(1 << 20)
    for i, (name, raw) in enumerate(zip(paths, sizes, strict=True)):
        size = max(1, min(int(raw * scale), 2 << 20))
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((i.to_bytes(4, "big") + block * (size // len(block) + 1))[:size])


def generate_service(root: Path) -> Path:
    """A Python service's repository; returns the file a one-line change goes to."""
    rng = random.Random(13)
    kinds = [("service", ".py", 1600), ("tests", ".py", 800), ("docs", ".rst", 300),
             ("static", ".js", 300)]  # fmt: skip
    paths = [f"{top}/m{i % 29:02d}/f{i:04d}{ext}" for top, ext, n in kinds for i in range(n)]
    _files(root, rng, paths, 40_000_000)
    for junk in ("service/m00/__pycache__/f0000.cpython-311.pyc", ".git/objects/ab/cdef",
                 "docs/_build/index.html"):  # fmt: skip
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"x" * 1000)
    handlers = root / "service" / "api" / "handlers.py"
    handlers.parent.mkdir(parents=True)
    handlers.write_text("".join(f"def handler_{i}():\n    return {i}\n\n" for i in range(40)))
    (root / "requirements.txt").write_text("".join(f"package{i}==1.{i}\n" for i in range(5)))
    (root / ".dockerignore").write_text(".git\n**/*.pyc\n**/__pycache__\ndocs/_build\n")
    (root / "Dockerfile").write_text(SERVICE_DOCKERFILE)
    return handlers


def change_one_line(path: Path) -> None:
    """Rewrite one line in the middle of ``path``, as an edit does (not an append)."""
    lines = path.read_text().splitlines(keepends=True)
    middle = next(i for i in range(len(lines) // 2, len(lines)) if "return" in lines[i])
    lines[middle] = f"    return {random.randrange(10**9)}\n"  # still valid Python
    path.write_text("".join(lines))


def generate_bigcopy(root: Path, base: str) -> Path:
    rng = random.Random(5)
    _files(root, rng, [f"deps/p{i % 41:02d}/f{i:03d}.py" for i in range(400)], 8_000_000)
    _files(root, rng, [f"src/pkg{i % 41:02d}/mod{(i // 41) % 11}/f{i:05d}.py"
                       for i in range(20_000)], 79_000_000)  # fmt: skip
    (root / "Dockerfile").write_text(BIGCOPY_DOCKERFILE.format(base=base))
    return root / "src" / "pkg03" / "mod0" / "f00003.py"


def append_a_line(path: Path) -> None:
    with open(path, "a") as out:
        out.write(f"# {random.randrange(10**9)}\n")


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
    parser.add_argument("--shape", choices=["app", "service", "bigcopy", "all"], default="all")
    parser.add_argument("--files", type=int, default=20_000, help="the app shape's files")
    parser.add_argument("--megabytes", type=int, default=130, help="the app shape's size")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each rebuild")
    parser.add_argument(
        "--page-cache", choices=["warm", "cold"], default="warm",
        help="warm: the context is in memory before each build; cold: nothing is",
    )  # fmt: skip
    args = parser.parse_args()
    shapes = ["app", "service", "bigcopy"] if args.shape == "all" else [args.shape]
    kiln = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "kiln")
    with tempfile.TemporaryDirectory(prefix="kiln-bench-", dir="/var/tmp") as scratch:
        base = Path(scratch)
        rootfs = base / "rootfs"
        busybox_rootfs(rootfs)
        env = {**os.environ, "KILN_ROOT": str(base / "kiln")}

        def kiln_run(*command: str) -> None:
            subprocess.run([kiln, *command], env=env, check=True, capture_output=True)

        kiln_run("import", str(rootfs), "busybox:bench")
        kiln_run("save", "-o", str(base / "busybox.tar"), "busybox:bench")
        bigcopy_base = "busybox:bench"
        if "bigcopy" in shapes and DEBIAN_MINBASE.exists():
            kiln_run("import", str(DEBIAN_MINBASE), "debian:bench")
            kiln_run("save", "-o", str(base / "debian.tar"), "debian:bench")
            bigcopy_base = "debian:bench"
        dockerd = Dockerd(base)
        try:
            for archive in base.glob("*.tar"):
                dockerd.docker("load", "-i", str(archive))
            for shape in shapes:
                context = base / f"context-{shape}"
                context.mkdir()
                if shape == "app":
                    generate_context(context, args.files, args.megabytes * 1_000_000)
                    changed = next((context / "src").rglob("*.py"))
                    change = functools.partial(lambda p: p.write_bytes(os.urandom(64)), changed)
                    about = f"{args.files} files, {args.megabytes} MB; 2 COPY, 2 RUN"
                elif shape == "service":
                    change = functools.partial(change_one_line, generate_service(context))
                    about = "3,000 files, 40 MB, .dockerignore; COPY . . under WORKDIR"
                else:
                    change = functools.partial(
                        append_a_line, generate_bigcopy(context, bigcopy_base)
                    )
                    about = f"FROM {bigcopy_base}; a 20,000-file, 79 MB COPY src/"
                results = _measure(dockerd, kiln_run, context, change, args)
                _report(shape, about, results, args)
                shutil.rmtree(context)
        finally:
            dockerd.stop()


def _measure(
    dockerd: Dockerd,
    kiln_run: Callable[..., None],
    context: Path,
    change: Callable[[], object],
    args: argparse.Namespace,
) -> list[tuple[str, list[float], list[float]]]:
    def buildkit(*flags: str) -> None:
        dockerd.docker("build", "-q", "--network=host", *flags, "-t", "bench:1", str(context))

    def kiln_build(*flags: str) -> None:
        kiln_run("build", "-q", *flags, "-t", "bench:1", str(context))

    results = []
    for label, prepare, flags, repeat in (
        ("first build", lambda: None, (), 1),
        ("cold build (--no-cache)", lambda: None, ("--no-cache",), args.repeat),
        ("no-op rebuild", lambda: None, (), args.repeat),
        ("one source file changed", change, (), args.repeat),
    ):  # fmt: skip
        kiln_times, buildkit_times = [], []
        for _ in range(repeat):
            prepare()
            settle(context, args.page_cache)
            buildkit_times.append(timed(functools.partial(buildkit, *flags)))
            settle(context, args.page_cache)
            kiln_times.append(timed(functools.partial(kiln_build, *flags)))
        results.append((label, kiln_times, buildkit_times))
    return results


def _report(
    shape: str,
    about: str,
    results: list[tuple[str, list[float], list[float]]],
    args: argparse.Namespace,
) -> None:
    print(f"shape {shape}: {about}")
    print(f"each line: the median of its runs (fastest-slowest); up to {args.repeat} runs")
    print(f"page cache before each build: {args.page_cache}")
    print(f"{'':26} {'kiln':>20} {'BuildKit':>20} {'kiln/BuildKit':>14}")
    for label, kiln_times, buildkit_times in results:
        kiln_time, buildkit_time = statistics.median(kiln_times), statistics.median(buildkit_times)
        print(
            f"{label:26} {_spread(kiln_times):>20} {_spread(buildkit_times):>20} "
            f"{kiln_time / buildkit_time:14.2f}"
        )
    print(flush=True)


def _spread(times: list[float]) -> str:
    return f"{statistics.median(times):.2f}s ({min(times):.2f}-{max(times):.2f})"


if __name__ == "__main__":
    main()
