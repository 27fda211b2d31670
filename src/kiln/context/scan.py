"""Scanning a build context: what is in it, and a content digest for every file.

The walk visits only what it must: an excluded directory is pruned unless an exception
pattern could re-include something below it, and symlinks are recorded, never followed.
Digests are kept in a ``DigestCache`` keyed by (device, inode, size, mtime, ctime), so a
re-scan of an unchanged context costs one ``lstat`` per entry and no reads.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from kiln.config import default_root
from kiln.context.patterns import MatchInfo, PatternMatcher
from kiln.errors import ContextError

_LARGE_FILE = 1 << 20
# A file changed this recently may change again within the same timestamp tick, so its
# stat is no proof its content is the one hashed: hash it, but do not cache the digest.
RACY_WINDOW_NS = 2_000_000_000


class ContextEntry(NamedTuple):
    """One path in the context. ``digest`` is ``sha256:...`` for files and symlinks
    (of the link's target text) and "" for directories and special files.

    A named tuple, not a dataclass: a scan makes one per file, and this is 4x cheaper.
    """

    path: str
    kind: str  # "file", "dir", "symlink" or "other" (sockets, fifos, devices)
    mode: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    digest: str = ""
    link_target: str = ""


@dataclass(frozen=True)
class ContextSnapshot:
    """Every entry a build may read, sorted by path, and what the scan had to hash."""

    root: Path
    entries: tuple[ContextEntry, ...]
    hashed_files: int
    hashed_bytes: int
    _index: dict[str, ContextEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {e.path: e for e in self.entries})

    def __iter__(self) -> Iterator[ContextEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, path: str) -> ContextEntry | None:
        return self._index.get(path)

    def digest(self) -> str:
        """One digest for the whole context: names, kinds, modes and contents."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(f"{e.path}\0{e.kind}\0{e.mode:o}\0{e.digest}\0{e.link_target}\n".encode())
        return "sha256:" + h.hexdigest()


class DigestCache:
    """File digests remembered across runs, in SQLite; safe for concurrent processes.

    One row per context root holds all of its entries, marshalled: loading 20,000 digests
    is then one read, not 20,000 rows.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_root() / "cache" / "context.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS contexts (root TEXT PRIMARY KEY, entries BLOB)")

    def close(self) -> None:
        self.db.close()

    def load(self, root: Path) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every cached (stat key, digest) under ``root``, by absolute path."""
        row = self.db.execute("SELECT entries FROM contexts WHERE root = ?", (str(root),))
        found = row.fetchone()
        if found is None:
            return {}
        try:
            entries = marshal.loads(found[0])
        except (EOFError, ValueError, TypeError):
            return {}  # written by another version: start afresh
        return entries if isinstance(entries, dict) else {}

    def save(self, root: Path, entries: dict[str, tuple[tuple[int, ...], str]]) -> None:
        """Replace what is remembered for ``root``."""
        self.db.execute(
            "INSERT OR REPLACE INTO contexts VALUES (?, ?)", (str(root), marshal.dumps(entries))
        )


def scan_context(
    root: Path,
    ignore: PatternMatcher | None = None,
    cache: DigestCache | None = None,
) -> ContextSnapshot:
    """Walk ``root`` (minus what ``ignore`` excludes) and digest every file."""
    root = root.resolve()
    if not root.is_dir():
        raise ContextError(f"build context {root} is not a directory")
    walker = _Walker(str(root) + "/", ignore)
    walker.walk("", MatchInfo())
    found = walker.found
    known = cache.load(root) if cache else {}
    digests: list[str] = [""] * len(found)
    to_hash: list[int] = []
    for i, item in enumerate(found):
        if item.kind == "file":
            cached = known.get(walker.prefix + item.path)
            if cached is not None and cached[0] == _stat_key(item.st):
                digests[i] = cached[1]
            else:
                to_hash.append(i)
        elif item.kind == "symlink":
            digests[i] = "sha256:" + hashlib.sha256(os.fsencode(item.link_target)).hexdigest()
    now = time.time_ns()
    stored: list[tuple[str, tuple[int, ...], str]] = []
    if to_hash:
        paths = [walker.prefix + found[i].path for i in to_hash]
        # Large files are hashed in threads (hashlib drops the GIL on big buffers); small
        # ones inline, where a thread hand-off would cost more than the hash.
        large = [n for n, i in enumerate(to_hash) if found[i].st.st_size >= _LARGE_FILE]
        hashed: list[str] = [""] * len(paths)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            pending = {n: pool.submit(_hash_file, paths[n]) for n in large}
            for n, path in enumerate(paths):
                if n not in pending:
                    hashed[n] = _hash_file(path)
            for n, future in pending.items():
                hashed[n] = future.result()
        for i, path, digest in zip(to_hash, paths, hashed, strict=True):
            digests[i] = digest
            if found[i].st.st_mtime_ns < now - RACY_WINDOW_NS:
                stored.append((path, _stat_key(found[i].st), digest))
    files = sum(1 for item in found if item.kind == "file")
    if cache and (to_hash or files != len(known)):
        remembered = {
            walker.prefix + item.path: (_stat_key(item.st), digests[i])
            for i, item in enumerate(found)
            if item.kind == "file"
        }
        unsettled = {walker.prefix + found[i].path for i in to_hash} - {p for p, _, _ in stored}
        for path in unsettled:
            del remembered[path]
        if remembered != known:
            cache.save(root, remembered)
    entries = sorted(
        (item.entry(digest) for item, digest in zip(found, digests, strict=True)),
        key=lambda e: e.path,
    )
    hashed_bytes = sum(found[i].st.st_size for i in to_hash)
    return ContextSnapshot(root, tuple(entries), len(to_hash), hashed_bytes)


def context_paths(root: Path, ignore: PatternMatcher | None = None) -> set[str]:
    """The paths of the context a build may read, after .dockerignore, without hashing."""
    walker = _Walker(str(root.resolve()) + "/", ignore)
    walker.walk("", MatchInfo())
    return {item.path for item in walker.found}


class _Found(NamedTuple):
    path: str
    kind: str
    st: os.stat_result
    link_target: str = ""

    def entry(self, digest: str) -> ContextEntry:
        st = self.st
        return ContextEntry(
            self.path, self.kind, st.st_mode, st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid,
            digest, self.link_target,
        )  # fmt: skip


class _Walker:
    """Collects what the context holds; prunes excluded directories when it may."""

    def __init__(self, prefix: str, ignore: PatternMatcher | None) -> None:
        self.prefix = prefix
        self.ignore = ignore if ignore is not None and ignore.patterns else None
        self.found: list[_Found] = []

    def walk(self, directory: str, info: MatchInfo) -> None:
        try:
            with os.scandir(self.prefix + directory) as listing:
                children = list(listing)  # in any order: the snapshot is sorted at the end
        except OSError as err:
            raise ContextError(f"cannot read {self.prefix}{directory}: {err.strerror}") from None
        for child in children:
            path = f"{directory}/{child.name}" if directory else child.name
            excluded, child_info = False, info
            if self.ignore is not None:
                excluded, child_info = self.ignore.match_in_dir(path, info)
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as err:
                raise ContextError(f"cannot stat {child.path}: {err.strerror}") from None
            if stat.S_ISDIR(st.st_mode):
                self.walk_dir(path, st, excluded, child_info)
            elif not excluded:
                self.add(path, st)

    def walk_dir(self, path: str, st: os.stat_result, excluded: bool, info: MatchInfo) -> None:
        if not excluded:
            self.add(path, st)
            self.walk(path, info)
        elif self.ignore is not None and self.ignore.may_include_under(path):
            position = len(self.found)
            self.walk(path, info)
            if len(self.found) > position:  # something below was re-included: keep its parent
                self.found.insert(position, _Found(path, "dir", st))

    def add(self, path: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self.found.append(_Found(path, "file", st))
        elif stat.S_ISDIR(mode):
            self.found.append(_Found(path, "dir", st))
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(self.prefix + path)
            except OSError as err:
                message = f"cannot read link {self.prefix}{path}: {err.strerror}"
                raise ContextError(message) from None
            self.found.append(_Found(path, "symlink", st, target))
        else:
            self.found.append(_Found(path, "other", st))


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_file(path: str) -> str:
    try:
        with open(path, "rb", buffering=0) as f:
            h = hashlib.file_digest(f, "sha256")
    except OSError as err:
        raise ContextError(f"cannot read {path} in the build context: {err.strerror}") from None
    return "sha256:" + h.hexdigest()
