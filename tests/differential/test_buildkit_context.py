""".dockerignore semantics against a real BuildKit: what ``COPY . /ctx/`` puts in the image.

Each case builds a context with an ignore file, copies all of it into a scratch image with
Debian's Docker engine, exports the image's files, and compares them with kiln's scan of
the same context under the same rules.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kiln.context import load_ignore, scan_context
from tests.engines import DockerEngine

pytestmark = pytest.mark.slow

FILES = [
    "app/main.py", "app/main.pyc", "app/sub/util.pyc", "important.pyc", "notes.log",
    "build/out.o", "build/keep/me.txt", "docs/README.md", "docs/api/index.md",
    "docs/private/secret.md", "keep/a/b.txt", "src/a/keep.txt", "src/b/keep.txt",
    "src/c/drop.txt", "top.txt", "deep/er/keep.txt",
]  # fmt: skip

# Debian's engine carries BuildKit 0.8, whose context walker always pruned by path prefix;
# current BuildKit walks excluded directories when an exception has a wildcard, and kiln
# follows current BuildKit. The cases below are those where both agree; tests/context
# covers the rest (e.g. "src/*" then "!src/*/keep.txt").
CASES = {
    "simple": ["*.log", "build"],
    "exception-in-excluded-dir": ["build", "!build/keep"],
    "exception-with-trailing-glob": ["*", "!keep/**", "!Dockerfile"],
    "double-star": ["**/*.pyc", "!important.pyc"],
    "leading-slash-and-dots": ["/app/./sub", "./top.txt"],
    "exception-then-exclusion": ["docs", "!docs/README.md", "docs/private", "!a/b"],
}


def image_files(engine: DockerEngine, context: Path) -> set[str]:
    tag = f"kiln-ctx-{context.name}"
    engine.run("build", "-q", "-t", tag, str(context), env={"DOCKER_BUILDKIT": "1"})
    container = engine.run("create", tag, "/none").strip()
    try:
        exported = engine.run_bytes("export", container)
    finally:
        engine.run("rm", container)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        names = {m.name.rstrip("/") for m in tar.getmembers()}
    return {n.removeprefix("ctx/") for n in names if n.startswith("ctx/")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_context_matches_buildkit(docker_engine: DockerEngine, tmp_path: Path, case: str) -> None:
    context = tmp_path / case
    for name in FILES:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(name)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    (context / ".dockerignore").write_text("\n".join(CASES[case]) + "\n")
    rules = load_ignore(context, context / "Dockerfile")
    assert rules is not None
    ours = {e.path for e in scan_context(context, rules.matcher)}
    assert ours == image_files(docker_engine, context)
