"""The context scanner on real files: digests, symlinks, pruning and the stat cache."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from kiln.context import DigestCache, PatternMatcher, scan_context
from kiln.context.scan import RACY_WINDOW_NS
from kiln.errors import ContextError


def make(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def age(root: Path, seconds: float = 60) -> None:
    """Backdate every file, so none is too recent for its digest to be cached."""
    past = time.time() - seconds
    for dirpath, _, names in os.walk(root):
        for name in names:
            os.utime(Path(dirpath) / name, (past, past), follow_symlinks=False)


@pytest.fixture
def cache(tmp_path: Path) -> DigestCache:
    return DigestCache(tmp_path / "cache" / "context.db")


def test_entries_and_digests_are_those_of_the_files(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "alpha", "dir/b.txt": "beta"})
    snapshot = scan_context(root)
    assert [(e.path, e.kind) for e in snapshot] == [
        ("a.txt", "file"),
        ("dir", "dir"),
        ("dir/b.txt", "file"),
    ]
    entry = snapshot.get("dir/b.txt")
    assert entry is not None
    assert entry.digest == "sha256:" + hashlib.sha256(b"beta").hexdigest()
    assert entry.size == 4
    assert snapshot.hashed_files == 2 and snapshot.hashed_bytes == 9


def test_symlinks_are_recorded_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    outside = tmp_path / "outside"
    make(outside, {"secret": "do not read"})
    make(root, {"x": "x"})
    (root / "link").symlink_to(outside)
    (root / "dangling").symlink_to("nowhere")
    snapshot = scan_context(root)
    link = snapshot.get("link")
    assert link is not None and link.kind == "symlink"
    assert link.link_target == str(outside)
    assert link.digest == "sha256:" + hashlib.sha256(str(outside).encode()).hexdigest()
    assert snapshot.get("link/secret") is None
    assert snapshot.get("dangling") is not None


def test_ignored_paths_are_left_out(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    make(root, {"keep.py": "", "skip.log": "", "node_modules/m/index.js": "", "src/a.log": ""})
    snapshot = scan_context(root, PatternMatcher(["*.log", "node_modules"]))
    assert [e.path for e in snapshot] == ["keep.py", "src", "src/a.log"]


@pytest.mark.parametrize(
    "patterns",
    [
        ["vendor", "!vendor/keep.txt"],
        ["*", "!**/keep.txt"],
        ["*", "!src/*/keep.txt", "src/b"],
        ["**/*.txt", "!a/keep.txt", "a"],
        ["docs", "!docs/**/*.md", "docs/private"],
    ],
)
def test_pruning_never_changes_the_result(tmp_path: Path, patterns: list[str]) -> None:
    root = tmp_path / "ctx"
    names = [
        "vendor/keep.txt", "vendor/lib/x.go", "src/a/keep.txt", "src/b/keep.txt", "src/c.go",
        "a/keep.txt", "a/other.txt", "deep/er/keep.txt", "docs/index.md", "docs/private/p.md",
        "docs/img/logo.png", "top.txt",
    ]  # fmt: skip
    make(root, dict.fromkeys(names, "x"))
    matcher = PatternMatcher(patterns)
    scanned = {e.path for e in scan_context(root, matcher) if e.kind == "file"}
    expected = {n for n in names if not matcher.matches(n)}
    assert scanned == expected


@pytest.mark.parametrize(
    ("files", "patterns", "kept"),
    [
        # A wildcard exception reaches into directories a prefix rule would have pruned.
        (["src/a/keep.txt", "src/a/drop.txt", "src/b.txt"], ["src/*", "!src/*/keep.txt"],
         {"src", "src/a", "src/a/keep.txt"}),
        # The last matching pattern wins, below a walked directory too.
        (["docs/a.md", "docs/api/b.md", "docs/private/p.md", "docs/x.png"],
         ["docs", "!docs/**/*.md", "docs/private"],
         {"docs", "docs/a.md", "docs/api", "docs/api/b.md"}),
        # An excluded directory walked for nothing is not part of the context.
        (["a/b", "a/c", "z"], ["a", "!a/b", "a"], {"z"}),
    ],
)  # fmt: skip
def test_exceptions_in_excluded_directories(
    tmp_path: Path, files: list[str], patterns: list[str], kept: set[str]
) -> None:
    root = tmp_path / "ctx"
    make(root, dict.fromkeys(files, "x"))
    assert {e.path for e in scan_context(root, PatternMatcher(patterns))} == kept


def test_rescan_of_unchanged_context_hashes_nothing(tmp_path: Path, cache: DigestCache) -> None:
    root = tmp_path / "ctx"
    make(root, {f"d{i}/f{j}.txt": f"{i}-{j}" for i in range(5) for j in range(20)})
    age(root)
    first = scan_context(root, cache=cache)
    assert first.hashed_files == 100
    second = scan_context(root, cache=DigestCache(cache.path))  # a new process, same db
    assert second.hashed_files == 0
    assert second.digest() == first.digest()


def test_changed_content_is_detected_even_with_same_size_and_mtime(
    tmp_path: Path, cache: DigestCache
) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "aaaa", "b.txt": "bbbb"})
    age(root)
    scan_context(root, cache=cache)
    target = root / "a.txt"
    before = target.stat()
    target.write_text("AAAA")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime restored; ctime moves
    snapshot = scan_context(root, cache=cache)
    assert snapshot.hashed_files == 1
    entry = snapshot.get("a.txt")
    assert entry is not None
    assert entry.digest == "sha256:" + hashlib.sha256(b"AAAA").hexdigest()


def test_racy_files_are_hashed_but_not_cached(tmp_path: Path, cache: DigestCache) -> None:
    root = tmp_path / "ctx"
    make(root, {"old.txt": "old"})
    age(root)
    make(root, {"new.txt": "new"})  # modified just now: inside the racy window
    assert time.time_ns() - (root / "new.txt").stat().st_mtime_ns < RACY_WINDOW_NS
    assert scan_context(root, cache=cache).hashed_files == 2
    assert scan_context(root, cache=cache).hashed_files == 1


def test_rows_of_vanished_files_are_pruned(tmp_path: Path, cache: DigestCache) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "a", "b.txt": "b"})
    age(root)
    scan_context(root, cache=cache)
    (root / "b.txt").unlink()
    scan_context(root, cache=cache)
    assert sorted(cache.load(root.resolve())) == [str(root.resolve() / "a.txt")]


def test_a_fifo_is_recorded_but_never_read(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    os.mkfifo(root / "pipe")
    snapshot = scan_context(root)  # would block forever if the scanner opened it
    entry = snapshot.get("pipe")
    assert entry is not None and entry.kind == "other" and entry.digest == ""


def test_context_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not a directory"):
        scan_context(tmp_path / "missing")
