"""The context scanner on real files: digests, symlinks, pruning and the stat cache."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from kiln.context import ContextScan, DigestCache, PatternMatcher, scan_context
from kiln.context import scan as scan_module
from kiln.context.scan import RACY_WINDOW_NS
from kiln.errors import ContextError


@pytest.fixture(autouse=True, params=["find", "python"])
def walker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with GNU find doing the stat walk, and with the Python walk that
    replaces it where find is missing."""
    if request.param == "python":
        monkeypatch.setattr(scan_module, "FIND", "/nonexistent/find")
    return str(request.param)


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


NAMES = [
    "vendor/keep.txt", "vendor/lib/x.go", "src/a/keep.txt", "src/b/keep.txt", "src/c.go",
    "a/keep.txt", "a/other.txt", "deep/er/keep.txt", "docs/index.md", "docs/private/p.md",
    "docs/img/logo.png", "top.txt",
]  # fmt: skip


@pytest.mark.parametrize(
    ("patterns", "kept"),
    [
        (["vendor", "!vendor/keep.txt"], set(NAMES) - {"vendor/lib/x.go"}),
        (["*", "!**/keep.txt"],
         {"vendor/keep.txt", "src/a/keep.txt", "src/b/keep.txt", "a/keep.txt",
          "deep/er/keep.txt"}),
        (["*", "!src/*/keep.txt", "src/b"], {"src/a/keep.txt"}),
        (["**/*.txt", "!a/keep.txt", "a"],
         {"vendor/lib/x.go", "src/c.go", "docs/index.md", "docs/private/p.md",
          "docs/img/logo.png"}),
        (["docs", "!docs/**/*.md", "docs/private"],
         set(NAMES) - {"docs/private/p.md", "docs/img/logo.png"}),
    ],
)  # fmt: skip
def test_the_scan_keeps_what_the_patterns_let_through(
    tmp_path: Path, patterns: list[str], kept: set[str]
) -> None:
    """Written out as Docker reads the rules (a rule matches a path's parents too; the last
    matching rule wins), whatever the walk prunes on the way."""
    root = tmp_path / "ctx"
    make(root, dict.fromkeys(NAMES, "x"))
    scanned = {e.path for e in scan_context(root, PatternMatcher(patterns)) if e.kind == "file"}
    assert scanned == kept


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
    remembered = cache.lookup(str(root.resolve()))
    assert remembered is not None
    assert [row[0] for row in remembered.entries] == ["a.txt"]
    assert b"b.txt" not in remembered.walk


def test_an_unchanged_listing_reuses_the_last_snapshot(tmp_path: Path, cache: DigestCache) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "a", "d/b.txt": "b"})
    (root / "l").symlink_to("d/b.txt")
    age(root)
    first = scan_context(root, cache=cache)
    assert first.listing != "" and cache.unchanged(str(root.resolve()), first.listing)

    def no_parsing(listing: bytes) -> None:
        raise AssertionError("an unchanged listing was parsed again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scan_module, "_records", no_parsing)
        second = scan_context(root, cache=cache)
    assert second.entries == first.entries and second.hashed_files == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "a.txt").chmod(0o600),
        lambda root: os.chown(root / "a.txt", 1234, 1234),
        lambda root: (root / "new.txt").write_text("n"),
        lambda root: (root / "d" / "b.txt").unlink(),
        lambda root: os.utime(root / "a.txt", (1, 1)),
        lambda root: (root / "a.txt").write_text("A"),
        lambda root: (root / "skip.log").write_text("changed but still ignored"),
        lambda root: ((root / "l").unlink(), (root / "l").symlink_to("a.txt")),
        lambda root: ((root / "a.txt").unlink(), (root / "a.txt").mkdir()),
        lambda root: (root / "d" / "keep.log").write_text("k2"),
    ],
    ids=[
        "chmod", "chown", "new file", "removed file", "mtime", "content", "ignored file",
        "symlink retargeted", "file became a directory", "re-included file",
    ],
)  # fmt: skip
@pytest.mark.parametrize("patterns", [[], ["*.log", "d", "!d/keep.log"]])
def test_every_kind_of_change_shows_in_the_next_snapshot(
    tmp_path: Path, cache: DigestCache, change: object, patterns: list[str]
) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "a", "d/b.txt": "b", "skip.log": "s", "d/keep.log": "k"})
    (root / "l").symlink_to("d/b.txt")
    age(root)
    matcher = PatternMatcher(patterns)
    sources = ["", "d", "a.txt", "l"]
    taken_with(root, matcher, cache, sources)  # remembered with the scan
    change(root)  # type: ignore[operator]
    fresh = scan_context(root, matcher)  # no cache at all
    assert scan_context(root, matcher, cache).entries == fresh.entries
    # What COPY steps are keyed by is never a stale remembered digest either.
    assert taken_with(root, matcher, cache, sources) == {s: fresh.files_digest(s) for s in sources}


def taken_with(
    root: Path, matcher: PatternMatcher | None, cache: DigestCache, sources: list[str]
) -> dict[str, str]:
    """The digests of ``sources`` as a build takes them: from a snapshot of a scan still
    open, so that closing it remembers them."""
    with ContextScan(root, matcher) as scan:
        snapshot = scan.snapshot(cache)
        return {source: snapshot.files_digest(source) for source in sources}


def test_an_unchanged_context_gives_its_copy_digests_without_its_entries(
    tmp_path: Path, cache: DigestCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "a", "d/b.txt": "b", "d/e/c.txt": "c"})
    age(root)
    first = taken_with(root, None, cache, ["d", "a.txt"])
    with monkeypatch.context() as patch:
        patch.setattr(scan_module, "_entry", lambda row: pytest.fail("entries were decoded"))
        assert taken_with(root, None, cache, ["d", "a.txt"]) == first
    # Each digest covers what is at or below its path, and nothing beside it.
    fresh = scan_context(root)
    assert first["d"] == fresh.files_digest("d") != fresh.files_digest("d/e")
    assert [e.path for e in fresh.under("d")] == ["d", "d/b.txt", "d/e", "d/e/c.txt"]


def test_a_damaged_cache_of_entries_is_hashed_afresh(tmp_path: Path, cache: DigestCache) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "a", "d/b.txt": "b"})
    age(root)
    first = scan_context(root, cache=cache)
    cache.db.execute("UPDATE scans SET entries = x'00ff'")
    again = scan_context(root, cache=cache)
    assert again.entries == first.entries


def test_changed_patterns_do_not_reuse_the_last_snapshot(
    tmp_path: Path, cache: DigestCache
) -> None:
    root = tmp_path / "ctx"
    make(root, {"a.txt": "a", "b.log": "b"})
    age(root)
    assert len(scan_context(root, PatternMatcher(["*.log"]), cache)) == 1
    assert len(scan_context(root, PatternMatcher(["*.txt"]), cache)) == 1
    assert [e.path for e in scan_context(root, None, cache)] == ["a.txt", "b.log"]


def test_entries_carry_the_exact_stat_of_every_path(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    make(root, {"with space.txt": "s", "new\nline": "n", "d/x": "x", "suid": "#!"})
    (root / "suid").chmod(0o4755)
    (root / "d").chmod(0o1777)
    (root / "link to").symlink_to("target with space")
    os.utime(root / "d" / "x", ns=(0, -315619199_750000000))  # before 1970
    os.utime(root / "suid", ns=(0, 1_700_000_000_123456789))
    os.chown(root / "d" / "x", 4242, 4343)
    for entry in scan_context(root):
        st = os.lstat(root / entry.path)
        assert (entry.mode, entry.size, entry.mtime_ns, entry.uid, entry.gid) == (
            st.st_mode, st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid,
        ), entry.path  # fmt: skip
    link = scan_context(root).get("link to")
    assert link is not None and link.link_target == "target with space"


def test_find_and_python_walks_give_the_same_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, walker: str
) -> None:
    root = tmp_path / "ctx"
    make(root, {"a/b/c.txt": "c", "a/keep.md": "k", "node_modules/x/y.js": "y", "z.log": "z"})
    (root / "a" / "link").symlink_to("../z.log")
    os.mkfifo(root / "a" / "fifo")
    os.utime(root / "z.log", ns=(0, -315619199_750000000))
    matcher = PatternMatcher(["node_modules", "*.log", "a", "!a/keep.md"])
    ours = scan_context(root, matcher)
    with ContextScan(root, matcher) as scan:
        listing = scan._listing()
    monkeypatch.setattr(scan_module, "FIND", "find" if walker == "python" else "/nonexistent")
    assert scan_context(root, matcher).entries == ours.entries
    with ContextScan(root, matcher) as scan:
        assert scan._listing() == listing  # byte for byte: a cache made by one serves both
    assert [e.path for e in ours] == ["a", "a/keep.md"]


def test_the_walk_skips_plainly_excluded_directories(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    make(root, {"node_modules/m.js": "", "a/b/deep.o": "", "a/c/d/e.o": "", "src/a.c": ""})
    matcher = PatternMatcher(["node_modules", "a/b", "a/c/d", "*.tmp", "src", "!src/a.c"])
    with ContextScan(root, matcher) as scan:
        assert scan._pruned_paths == {"node_modules", "a/b", "a/c/d"}
        _, listing = scan._listing()
    assert b"m.js" not in listing and b".o\0" not in listing  # never walked
    assert b" ./a/c\0" in listing and b" ./src/a.c\0" in listing


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


def test_gnu_find_does_the_walk_where_it_is_installed(tmp_path: Path, walker: str) -> None:
    make(tmp_path / "ctx", {"d/a": "a", "top": "t"})
    with ContextScan(tmp_path / "ctx") as scan:
        _, listing = scan._listing()
        walks = scan._walks
        assert listing.endswith(b" ./d/a\0\0")
        if walker == "find":
            assert walks and all(process.returncode == 0 for process, _ in walks)
        else:
            assert walks is None


def test_a_cache_of_another_layout_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "context.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE contexts (root TEXT PRIMARY KEY, entries BLOB)")
    old.commit()
    old.close()
    root = tmp_path / "ctx"
    make(root, {"a": "a"})
    age(root)
    assert scan_context(root, cache=DigestCache(path)).hashed_files == 1
    assert scan_context(root, cache=DigestCache(path)).hashed_files == 0


def test_a_changed_file_is_patched_into_the_last_snapshot(
    tmp_path: Path, cache: DigestCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only stat changes, no path added or removed: the last snapshot is brought up to date
    without deciding .dockerignore again for every path."""
    root = tmp_path / "ctx"
    make(root, {"a.txt": "a", "d/b.txt": "b", "skip.log": "s"})
    age(root)
    matcher = PatternMatcher(["*.log"])
    scan_context(root, matcher, cache)
    (root / "d" / "b.txt").write_text("B")
    fresh = scan_context(root, matcher)

    def no_selection(*args: object) -> None:
        raise AssertionError("every path was selected again")

    monkeypatch.setattr(ContextScan, "_select", no_selection)
    patched = scan_context(root, matcher, cache)
    assert patched.entries == fresh.entries and patched.hashed_files == 1
