"""Benchmark: push and pull of a ~500 MB, 5-layer image to a local registry, kiln beside
``docker push``/``docker pull`` and ``skopeo copy``, in one run.

Not a test. Needs root, Debian's docker.io, docker-registry and skopeo. Run:
``.venv/bin/python bench/bench_registry.py``. The layers are half text-like (compressible)
and half random, so compression is a real part of a push. Each tool pushes to a repository
of its own and pulls into an empty store, so none finds the others' blobs.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.registries import start_registry

from bench_build import Dockerd, settle

KILN = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "kiln")
WORDS = b"the quick brown fox jumps over the lazy dog while kiln pushes layers ".split()


def generate(context: Path, layers: int, megabytes: int) -> None:
    """``layers`` directories of files, together ``megabytes`` MB, and a Dockerfile that
    copies each into a layer of its own."""
    rng = random.Random(7)
    per_layer = megabytes * 1_000_000 // layers
    for n in range(layers):
        directory = context / f"layer{n}"
        directory.mkdir(parents=True)
        written = 0
        i = 0
        while written < per_layer:
            size = min(rng.randint(200_000, 4_000_000), per_layer - written)
            if i % 2:
                data = rng.randbytes(size)
            else:
                text = b" ".join(rng.choice(WORDS) for _ in range(size // 5))
                data = (text * 2)[:size]
            (directory / f"f{i:04d}").write_bytes(data)
            written += size
            i += 1
    lines = ["FROM scratch", *(f"COPY layer{n}/ /layer{n}/" for n in range(layers))]
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(*command: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(command, check=True, capture_output=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-registry-", dir="/var/tmp") as scratch:
        base = Path(scratch)
        context = base / "context"
        generate(context, args.layers, args.megabytes)
        env = {**os.environ, "KILN_ROOT": str(base / "kiln")}
        run(KILN, "build", "-q", "-t", "big:1", str(context), env=env)
        run(KILN, "save", "-o", str(base / "big.tar"), "big:1", env=env)
        run(KILN, "build", "-q", "-o", f"type=oci,dest={base / 'layout'}", "-t", "big:1",
            str(context), env=env)  # fmt: skip
        registry = start_registry(base / "registry")
        dockerd = Dockerd(base)
        host = registry.host
        times: dict[str, dict[str, float]] = {"push": {}, "pull": {}}
        sizes: dict[str, int] = {}
        try:
            dockerd.docker("load", "-i", str(base / "big.tar"))
            dockerd.docker("tag", "big:1", f"{host}/docker/big:1")
            fresh = {**env, "KILN_ROOT": str(base / "kiln-pull")}
            layout, pulled = f"oci:{base / 'layout'}", f"oci:{base / 'skopeo-pull'}:big"
            pushes: dict[str, Callable[[], object]] = {
                "kiln": lambda: run(KILN, "push", "big:1", f"{host}/kiln/big:1", env=env),
                "docker": lambda: dockerd.docker("push", f"{host}/docker/big:1"),
                "skopeo": lambda: run("skopeo", "copy", "--dest-tls-verify=false", layout,
                                      f"docker://{host}/skopeo/big:1"),
            }  # fmt: skip
            pulls: dict[str, Callable[[], object]] = {
                "kiln": lambda: run(KILN, "pull", f"{host}/kiln/big:1", env=fresh),
                "docker": lambda: dockerd.docker("pull", f"{host}/docker/big:1"),
                "skopeo": lambda: run("skopeo", "copy", "--src-tls-verify=false",
                                      f"docker://{host}/skopeo/big:1", pulled),
            }  # fmt: skip
            for name, action in pushes.items():
                settle(context, "warm")
                times["push"][name] = timed(action)
                sizes[name] = _pushed_size(host, name)
            dockerd.docker("rmi", "-f", "big:1", f"{host}/docker/big:1")
            dockerd.docker("image", "prune", "-af")
            for name, action in pulls.items():
                settle(context, "warm")
                times["pull"][name] = timed(action)
        finally:
            dockerd.stop()
            registry.stop()
    print(f"image: {args.layers} layers, {args.megabytes} MB uncompressed; local registry")
    for name, size in sizes.items():
        print(f"pushed by {name:7} {size / 1e6:7.1f} MB compressed")
    for action, by_tool in times.items():
        for name, seconds in by_tool.items():
            print(f"{action} {name:7} {seconds:7.2f}s")
        fastest = min(t for name, t in by_tool.items() if name != "kiln")
        print(f"{action}: kiln / fastest of the others = {by_tool['kiln'] / fastest:.2f}")


def _pushed_size(host: str, repository: str) -> int:
    import json

    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{repository}/big:1"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return sum(int(layer["size"]) for layer in json.loads(raw)["layers"])


if __name__ == "__main__":
    main()
