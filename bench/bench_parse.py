"""Benchmark: parse, type and plan a generated 1,000-line Dockerfile.

Not a test: run it by hand (``.venv/bin/python bench/bench_parse.py``) and compare figures.
The Dockerfile mixes what real ones hold: several stages, ARG/ENV with expansion, RUN lines
with continuations, heredocs, COPY --from and mounts.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from kiln.dockerfile import BuildOptions, parse, parse_dockerfile, plan_build


def generate(lines: int) -> str:
    """A valid Dockerfile of at least ``lines`` lines."""
    out = ["# syntax=docker/dockerfile:1", "ARG BASE=debian:bookworm", "ARG VERSION=1.0"]
    stage = 0
    while len(out) < lines:
        out += [
            f"FROM ${{BASE}} AS stage{stage}",
            "ARG VERSION",
            f'ENV APP_HOME=/opt/app{stage} VERSION="${{VERSION}}" \\',
            "    PATH=/opt/bin:$PATH",
            "WORKDIR ${APP_HOME}",
            "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\",
            "    apt-get update \\",
            "    # a comment inside a continuation",
            "    && apt-get install -y --no-install-recommends ca-certificates curl \\",
            "    && rm -rf /var/lib/apt/lists/*",
            "COPY --chown=1000:1000 --chmod=0644 src/ ${APP_HOME}/src/",
            "COPY <<EOF /etc/app.conf",
            "name=app${VERSION}",
            "home=${APP_HOME}",
            "EOF",
            "RUN <<EOT bash",
            "  set -eux",
            "  echo building $VERSION",
            "EOT",
            'LABEL org.opencontainers.image.version="${VERSION}" stage="' + str(stage) + '"',
            'HEALTHCHECK --interval=30s --timeout=3s CMD ["curl", "-f", "http://localhost/"]',
            "EXPOSE 8080/tcp 8443",
            "USER 1000:1000",
            'CMD ["/opt/bin/app", "--config", "/etc/app.conf"]',
        ]
        if stage:
            out.append(f"COPY --from=stage{stage - 1} /etc/app.conf /etc/prev.conf")
        out.append("")
        stage += 1
    return "\n".join(out) + "\n"


def timed(label: str, fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    best, median = min(runs), statistics.median(runs)
    print(f"{label:<34} best {best * 1000:7.2f} ms   median {median * 1000:7.2f} ms")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    text = generate(args.lines)
    count = text.count("\n")
    print(f"Dockerfile: {count} lines, {len(text):,} bytes")
    timed("parse (syntax tree)", lambda: parse(text), args.repeat)
    timed("parse + typed instructions", lambda: parse_dockerfile(text), args.repeat)
    document = parse_dockerfile(text)
    timed("plan (all stages, expanded)", lambda: plan_build(document), args.repeat)
    timed(
        "parse + type + plan",
        lambda: plan_build(parse_dockerfile(text), BuildOptions(all_stages=True)),
        args.repeat,
    )


if __name__ == "__main__":
    main()
