"""Scanning a build context: what is in it, and a content digest for every file.

A scan is two passes. The stat walk lists every path with its stat: the top level in
Python, what is below it in up to four GNU ``find`` processes (which run while kiln goes
on importing and planning), or all of it in Python where no GNU find is installed. Then
kiln keeps what ``.dockerignore`` lets through and gives every file a digest.

Digests are remembered in a ``DigestCache`` with the stat they were taken under (device,
inode, size, mtime, ctime), so a re-scan reads no file whose stat is unchanged; and when the
whole listing is byte for byte the one of the last scan, the last snapshot is taken as it is.
The walk never follows symlinks, and prunes excluded directories where no exception pattern
could re-include something below them.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import marshal
import os
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

from kiln.config import default_root
from kiln.context.patterns import MatchInfo, PatternMatcher
from kiln.errors import ContextError

_LARGE_FILE = 1 << 20
# A file changed this recently may change again within the same timestamp tick, so its
# stat is no proof its content is the one hashed: hash it, but do not cache the digest.
RACY_WINDOW_NS = 2_000_000_000
# One record per path: type, device, inode, size, mtime, ctime, permission bits, owner,
# group, path below the root; then the link target (empty unless a symlink).
_FIND_FORMAT = "%y %D %i %s %T@ %C@ %m %U %G %p\\0%l\\0"
# Walks run at once, each over a share of the paths below the top level: on a cold page
# cache the walk waits on the disk, and several walks keep more reads in flight.
_WALKS = 4
_KINDS = {b"f": "file", b"d": "dir", b"l": "symlink"}
_TYPE_BITS = {
    b"f": stat.S_IFREG, b"d": stat.S_IFDIR, b"l": stat.S_IFLNK, b"p": stat.S_IFIFO,
    b"s": stat.S_IFSOCK, b"c": stat.S_IFCHR, b"b": stat.S_IFBLK,
}  # fmt: skip
_TYPE_LETTERS = {bits: letter for letter, bits in _TYPE_BITS.items()}
_CACHE_FORMAT = "kiln-context-2"
_SCHEMA_VERSION = 3
FIND = "find"  # GNU findutils; where it is missing or fails, the walk is done in Python


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


class ContextSnapshot:
    """Every entry a build may read, sorted by path, and what the scan had to hash.

    ``entries`` may be given as a function that makes them: a context whose listing is the
    last scan's is taken from the cache, and a build that finds every step cached never
    needs its 20,000 entries, only the digests of what its COPY steps read
    (``files_digest``), which the cache remembers beside them.
    """

    def __init__(
        self,
        root: Path,
        entries: Sequence[ContextEntry] | Callable[[], Iterable[ContextEntry]],
        hashed_files: int,
        hashed_bytes: int,
        walk: bytes = b"",
        *,
        listing: str = "",
        digests: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.hashed_files = hashed_files
        self.hashed_bytes = hashed_bytes
        self.walk = walk  # find's listing of it
        # The digest of that listing ("" when a file in it may still change unseen): what
        # the digests of subtrees are remembered under.
        self.listing = listing
        self._make = entries if callable(entries) else functools.partial(tuple, entries)
        self.known_digests = dict(digests or {})
        self.new_digests: dict[str, str] = {}  # taken by this build, for the cache to keep

    @functools.cached_property
    def entries(self) -> tuple[ContextEntry, ...]:
        return tuple(self._make())

    @functools.cached_property
    def _index(self) -> dict[str, ContextEntry]:
        return {e.path: e for e in self.entries}

    @functools.cached_property
    def paths(self) -> list[str]:
        """Every entry's path, in order."""
        return [e.path for e in self.entries]

    def __iter__(self) -> Iterator[ContextEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, path: str) -> ContextEntry | None:
        return self._index.get(path)

    @property
    def by_path(self) -> Mapping[str, ContextEntry]:
        return self._index

    def under(self, source: str) -> list[ContextEntry]:
        """The entries at or below ``source`` ("" is the whole context)."""
        if not source:
            return list(self.entries)
        paths = self.paths
        start = bisect.bisect_left(paths, source)
        end = bisect.bisect_left(paths, source + "0")  # "0" sorts right after "/"
        return [
            e
            for e in self.entries[start:end]
            if e.path == source or e.path.startswith(source + "/")
        ]

    def files_digest(self, source: str) -> str:
        """One digest for the names, kinds, modes and contents at or below ``source``:
        what a COPY of it reads. Remembered with the listing, so an unchanged context
        gives it without its entries."""
        found = self.known_digests.get(source)
        if found is None:
            found = hashlib.sha256(
                b"".join(
                    f"{e.path}\0{e.kind}\0{e.mode}\0{e.digest}\0{e.link_target}\n".encode()
                    for e in self.under(source)
                )
            ).hexdigest()
            self.known_digests[source] = self.new_digests[source] = found
        return found

    @functools.cached_property
    def hard_links(self) -> frozenset[str]:
        """The paths that are one inode with another path walked (``cp -a`` keeps such
        groups): found from the listing when a copy asks, as few contexts have any."""
        seen: dict[bytes, bytes] = {}
        linked: set[bytes] = set()
        for fields, _ in _records(self.walk):
            kind, dev, ino, _rest = fields.split(b" ", 3)
            if kind == b"d":
                continue
            path = fields.split(b" ", 9)[9].removeprefix(b"./")
            first = seen.setdefault(dev + b":" + ino, path)
            if first != path:
                linked.update((first, path))
        return frozenset(map(os.fsdecode, linked))

    def digest(self) -> str:
        """One digest for the whole context: names, kinds, modes and contents."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(f"{e.path}\0{e.kind}\0{e.mode:o}\0{e.digest}\0{e.link_target}\n".encode())
        return "sha256:" + h.hexdigest()


# A ContextEntry as a plain tuple, the form the cache stores.
Row = tuple[str, str, int, int, int, int, int, str, str]
# One path as the stat walk lists it: its stat fields and path, and its link target.
Record = tuple[bytes, bytes]


def _entry(row: Row) -> ContextEntry:
    """A row as an entry, without the named tuple's slower ``_make``."""
    return tuple.__new__(ContextEntry, row)


class Remembered(NamedTuple):
    """What the cache holds for a context root: the digest of the listing its scan walked
    ("" when that scan saw a racy file), the snapshot's entries (a file's digest "" where
    it must be taken again), the listing itself, and the position of each entry in it."""

    listing: str
    entries: list[Row]
    walk: bytes
    positions: list[int]


class DigestCache:
    """The last scan of every context (root and ignore patterns), in SQLite; safe for
    concurrent processes. One row per scan, marshalled: 20,000 digests are one read.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_root() / "cache" / "context.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        for attempt in range(50):  # SQLite does not wait when two switch a new file to WAL
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
        self.db.execute("PRAGMA synchronous=NORMAL")
        if self._version() != _SCHEMA_VERSION:
            self._start_afresh()

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _start_afresh(self) -> None:
        """Replace the tables of another version of kiln (or none) with this one's."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self._version() != _SCHEMA_VERSION:  # unless another process just did
                tables = self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                for (table,) in tables.fetchall():
                    self.db.execute(f'DROP TABLE "{table}"')
                self.db.execute(
                    "CREATE TABLE scans (scan TEXT PRIMARY KEY, listing TEXT, entries BLOB,"
                    " walk BLOB, positions BLOB, digests BLOB)"
                )
                self.db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def unchanged(self, scan: str, listing: str) -> tuple[bytes, dict[str, str]] | None:
        """For a scan whose listing is the one remembered: its entries, still marshalled
        (a build may never need them), and the digests of subtrees remembered with them."""
        row = self.db.execute(
            "SELECT entries, digests FROM scans WHERE scan = ? AND listing = ?", (scan, listing)
        ).fetchone()
        if row is None or not listing:
            return None
        try:
            digests = marshal.loads(row[1]) if row[1] else {}
        except (EOFError, ValueError, TypeError):
            digests = {}
        if not isinstance(digests, dict):
            digests = {}
        return bytes(row[0]), digests

    def lookup(self, scan: str) -> Remembered | None:
        """What is remembered for a scan."""
        row = self.db.execute(
            "SELECT listing, entries, walk, positions FROM scans WHERE scan = ?", (scan,)
        )
        found = row.fetchone()
        if found is None:
            return None
        try:
            positions = marshal.loads(found[3])
            return Remembered(found[0], marshal.loads(found[1]), bytes(found[2]), positions)
        except (EOFError, ValueError, TypeError):
            return None  # written by another version: start afresh

    def remember(self, scan: str, remembered: Remembered) -> None:
        """Replace what is remembered for a scan."""
        entries, positions = marshal.dumps(remembered.entries), marshal.dumps(remembered.positions)
        self.db.execute(
            "INSERT OR REPLACE INTO scans VALUES (?, ?, ?, ?, ?, NULL)",
            (scan, remembered.listing, entries, remembered.walk, positions),
        )

    def confirm(self, scan: str, listing: str) -> None:
        """Record that what is remembered for a scan holds for this listing too."""
        self.db.execute("UPDATE scans SET listing = ? WHERE scan = ?", (listing, scan))

    def remember_digests(self, scan: str, listing: str, digests: Mapping[str, str]) -> None:
        """Keep the digests of subtrees taken from a scan's entries, unless what is
        remembered is no longer that scan's (another build scanned a changed context)."""
        self.db.execute(
            "UPDATE scans SET digests = ? WHERE scan = ? AND listing = ?",
            (marshal.dumps(dict(digests)), scan, listing),
        )


class ContextScan:
    """A scan of ``root``, started at once: the stat walk runs in the background until
    ``snapshot`` needs it. Use as a context manager, or call ``close``."""

    def __init__(self, root: Path, ignore: PatternMatcher | None = None) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise ContextError(f"build context {self.root} is not a directory")
        self.ignore = ignore if ignore is not None and ignore.patterns else None
        patterns = "\n".join(p.text for p in self.ignore.patterns) if self.ignore else ""
        # What the cache keeps a scan under: contexts shared by Dockerfiles with ignore
        # files of their own keep one scan for each.
        self.key = f"{self.root}\0{patterns}" if patterns else str(self.root)
        self._prefix = str(self.root) + "/"
        self._pruned_paths = set(self._pruned())
        self._writer: threading.Thread | None = None
        self._result: ContextSnapshot | None = None
        self._cache_path: Path | None = None
        self._head, self._starts = self._top()
        self._walks: list[tuple[subprocess.Popen[bytes], IO[bytes]]] | None = []
        prune = self._prune_expression()
        try:
            for share in _shares([path for path, _ in self._starts], _WALKS):
                output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
                self._walks.append((self._start_find(share, prune, output), output))
        except OSError:  # no find here: the Python walk will do
            self.close()
            self._walks = None

    def __enter__(self) -> ContextScan:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the walks still running, and finish writing the cache: the snapshot, and
        the digests of subtrees the build asked for."""
        for process, output in self._walks or ():
            if process.poll() is None:
                process.kill()
            process.wait()
            output.close()
        if self._walks:
            self._walks = None  # their output is gone: a later walk is done in Python
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        snapshot = self._result
        if snapshot is not None and snapshot.new_digests and snapshot.listing and self._cache_path:
            _remember_digests(self._cache_path, self.key, snapshot)
            snapshot.new_digests.clear()

    def _start_find(
        self, starts: list[str], prune: list[str], output: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [FIND, *starts, *prune, "-printf", _FIND_FORMAT],
                cwd=self.root, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        except OSError:
            output.close()
            raise

    def snapshot(self, cache: DigestCache | None = None) -> ContextSnapshot:
        """Every entry after .dockerignore, with digests (taken once per scan). What the
        cache should remember of it is written in the background, until ``close``."""
        if self._result is None:
            self._result = self._snapshot(cache)
            self._cache_path = cache.path if cache is not None else None
        return self._result

    def _snapshot(self, cache: DigestCache | None) -> ContextSnapshot:
        listing, data = self._listing()
        unchanged = cache.unchanged(self.key, listing) if cache is not None else None
        if unchanged is not None:
            blob, digests = unchanged

            def stored() -> Iterable[ContextEntry]:
                try:
                    return tuple(map(_entry, marshal.loads(blob)))
                except (EOFError, ValueError, TypeError):  # a damaged cache: hash afresh
                    return self._snapshot(None).entries

            return ContextSnapshot(self.root, stored, 0, 0, data, listing=listing,
                                   digests=digests)  # fmt: skip
        records = _records(data)
        previous = cache.lookup(self.key) if cache is not None else None
        try:
            before = _records(previous.walk) if previous is not None else []
            found = self._restat(previous, before, records) if previous is not None else None
        except (IndexError, ValueError):  # not the cache this version writes
            before, found = [], None
        rows, positions = found or self._select(records, previous, before)
        to_hash = [i for i, row in enumerate(rows) if row[1] == "file" and not row[7]]
        for i, digest in zip(to_hash, self._hash([rows[i] for i in to_hash]), strict=True):
            rows[i] = (*rows[i][:7], digest, rows[i][8])
        entries = tuple(map(_entry, rows))
        if cache is not None:
            racy_since = time.time_ns() - RACY_WINDOW_NS
            for i in to_hash:  # their stat proves nothing yet: hash them again next time
                if rows[i][4] >= racy_since:
                    rows[i] = (*rows[i][:7], "", rows[i][8])
                    listing = ""
            remembered = Remembered(listing, rows, data, positions)
            self._writer = threading.Thread(
                target=_remember, args=(cache.path, self.key, remembered, previous)
            )
            self._writer.start()
        hashed_bytes = sum(rows[i][3] for i in to_hash)
        return ContextSnapshot(self.root, entries, len(to_hash), hashed_bytes, data,
                               listing=listing if cache is not None else "")  # fmt: skip

    def _restat(
        self, previous: Remembered, before: list[Record], records: list[Record]
    ) -> tuple[list[Row], list[int]] | None:
        """The last scan's entries brought up to date, when only the stat of some paths
        changed (none added, removed or of another kind): what .dockerignore keeps, and the
        order, stand. None otherwise."""
        if len(before) != len(records):
            return None
        entry_at = {position: i for i, position in enumerate(previous.positions)}
        rows = list(previous.entries)
        for n, (old, new) in enumerate(zip(before, records, strict=True)):
            if old == new:
                continue
            if _kind_and_path(old) != _kind_and_path(new):
                return None
            i = entry_at.get(n)
            if i is not None:
                rows[i] = _parse(new)
        return rows, previous.positions

    # -- the stat walk

    def _pruned(self) -> list[str]:
        """The directories the walk skips: those a plain pattern excludes and that no
        exception can reach into (the rest is left to ``_select``)."""
        ignore = self.ignore
        if ignore is None:
            return []
        return [
            pattern.cleaned
            for pattern in ignore.patterns
            if not pattern.exclusion
            and not set("*?[\\") & set(pattern.cleaned)
            and not pattern.cleaned.startswith(("/", ".."))
            and pattern.cleaned != "."
            and ignore.matches(pattern.cleaned)
            and not ignore.may_include_under(pattern.cleaned)
        ]

    def _prune_expression(self) -> list[str]:
        """``_pruned`` as find arguments."""
        tests: list[str] = []
        for path in sorted(self._pruned_paths):
            tests += [*(["-o"] if tests else []), "-path", _find_literal("./" + path)]
        return ["(", *tests, ")", "-prune", "-o"] if tests else []

    def _top(self) -> tuple[bytes, list[tuple[str, os.DirEntry[str]]]]:
        """The records of the top level of the context, and the paths one level below it
        that the walks start from. Both walks, find's and Python's, list the top level
        first, then every start path and what is below it, in readdir order."""
        head: list[bytes] = []
        starts: list[tuple[str, os.DirEntry[str]]] = []
        for child in self._children(""):
            record, walk = self._record(child, child.name)
            if record:
                head.append(record)
            if walk:
                starts += [(f"./{child.name}/{c.name}", c) for c in self._children(child.name)]
        return b"".join(head), starts

    def _record(self, child: os.DirEntry[str], path: str) -> tuple[bytes, bool]:
        """``child``'s record ("" if pruned), and whether to walk below it."""
        try:
            st = child.stat(follow_symlinks=False)
            target = os.readlink(child.path) if stat.S_ISLNK(st.st_mode) else ""
        except OSError as err:
            raise ContextError(f"cannot stat {child.path}: {err.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            return _record("./" + path, st, target), False
        if path in self._pruned_paths:
            return b"", False
        return _record("./" + path, st, target), True

    def _listing(self) -> tuple[str, bytes]:
        """The walk's listing, and a digest of it with the patterns it is filtered by."""
        listing = hashlib.sha256(f"{_CACHE_FORMAT}\n{self.key}\0".encode())
        walks = self._walks
        if walks is not None and all(process.wait() == 0 for process, _ in walks):
            data = self._head + b"".join(_read_all(output) for _, output in walks)
        else:  # no find here, or one failed: the Python walk says where and why
            data = self._head + self._walk()
        listing.update(data)
        return listing.hexdigest(), data

    def _walk(self) -> bytes:
        """What find lists below the top level, walked in Python where no GNU find ran (or
        it failed): the same bytes, and errors that name the path."""
        found: list[bytes] = []
        for start, entry in self._starts:
            stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = []
            record, walk = self._record(entry, start[2:])
            found.append(record)
            if walk:
                stack.append((start[2:], self._children(start[2:])))
            while stack:
                directory, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    continue
                path = f"{directory}/{child.name}"
                record, walk = self._record(child, path)
                found.append(record)
                if walk:
                    stack.append((path, self._children(path)))
        return b"".join(found)

    def _children(self, directory: str) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(self._prefix + directory) as listing:
                return iter(list(listing))
        except OSError as err:
            message = f"cannot read {self._prefix}{directory}: {err.strerror}"
            raise ContextError(message) from None

    def _select(
        self, records: list[Record], previous: Remembered | None, before: list[Record]
    ) -> tuple[list[Row], list[int]]:
        """Every record .dockerignore lets through, as an entry (with the last scan's digest
        where its record is unchanged), sorted by path; and the position of each record.

        Decided as BuildKit's walker decides: a directory excluded but walked for its
        exceptions is kept only if something below it is."""
        known: dict[Record, Row] = {}
        if previous is not None:
            pairs = zip(previous.positions, previous.entries, strict=True)
            known = {before[n]: row for n, row in pairs}
        rows: list[Row] = []
        for record in records:
            row = known.get(record)
            rows.append(_parse(record) if row is None else row)
        kept = self._kept(rows)
        kept.sort(key=lambda i: rows[i][0])
        return [rows[i] for i in kept], kept

    def _kept(self, rows: list[Row]) -> list[int]:
        """The indexes of the rows .dockerignore lets through."""
        ignore = self.ignore
        if ignore is None:
            return list(range(len(rows)))
        walked: dict[str, MatchInfo] = {"": MatchInfo()}
        withheld: dict[str, int] = {}  # excluded directories walked for exceptions
        kept: list[int] = []
        for i, (path, kind, *_) in enumerate(rows):  # parents come before their children
            parent = path.rpartition("/")[0]
            info = walked.get(parent)
            if info is None:
                continue  # below a pruned directory
            excluded, info = ignore.match_in_dir(path, info)
            if kind == "dir" and (not excluded or ignore.may_include_under(path)):
                walked[path] = info
                if excluded:
                    withheld[path] = i
                    continue
            if excluded:
                continue
            kept.append(i)
            while parent in withheld:
                kept.append(withheld.pop(parent))
                parent = parent.rpartition("/")[0]
        return kept

    # -- digests

    def _hash(self, rows: list[Row]) -> list[str]:
        """Digests of these files: large ones in threads (hashlib drops the GIL on big
        buffers), small ones inline, where a thread hand-off would cost more than the hash."""
        paths = [self._prefix + row[0] for row in rows]
        digests = [""] * len(rows)
        large = [n for n, row in enumerate(rows) if row[3] >= _LARGE_FILE]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            pending = {n: pool.submit(_hash_file, paths[n]) for n in large}
            for n, path in enumerate(paths):
                if n not in pending:
                    digests[n] = _hash_file(path)
            for n, future in pending.items():
                digests[n] = future.result()
        return digests


def scan_context(
    root: Path,
    ignore: PatternMatcher | None = None,
    cache: DigestCache | None = None,
) -> ContextSnapshot:
    """Walk ``root`` (minus what ``ignore`` excludes) and digest every file."""
    with ContextScan(root, ignore) as scan:
        return scan.snapshot(cache)


def _remember(path: Path, scan: str, remembered: Remembered, previous: Remembered | None) -> None:
    """Write what a scan found, from a thread of its own while the build goes on."""

    def write(cache: DigestCache) -> None:
        unchanged = previous is not None and previous[1:] == remembered[1:]
        if not unchanged:
            cache.remember(scan, remembered)
        elif remembered.listing:
            cache.confirm(scan, remembered.listing)

    _writing(path, write)


def _remember_digests(path: Path, scan: str, snapshot: ContextSnapshot) -> None:
    """Write the digests of subtrees a build took."""
    _writing(path, lambda cache: cache.remember_digests(scan, snapshot.listing,
                                                        snapshot.known_digests))  # fmt: skip


def _writing(path: Path, write: Callable[[DigestCache], None]) -> None:
    """``write`` to the cache at ``path``. The cache only saves work: if it cannot be
    written, the next scan hashes again."""
    try:
        cache = DigestCache(path)
        try:
            write(cache)
        finally:
            cache.close()
    except (sqlite3.Error, OSError):
        pass


def _shares(paths: list[str], count: int) -> list[list[str]]:
    """``paths`` in at most ``count`` runs of about the same length (and not so short that a
    process costs more than it saves), in order."""
    size = max(-(-len(paths) // count), 8)
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def _read_all(output: IO[bytes]) -> bytes:
    output.seek(0)
    return output.read()


def _records(listing: bytes) -> list[Record]:
    fields = listing.split(b"\0")
    return list(zip(fields[0:-1:2], fields[1::2], strict=True))


def _record(path: str, st: os.stat_result, link_target: str) -> bytes:
    """A path as find's ``-printf`` lists it (see _FIND_FORMAT)."""
    kind = _TYPE_LETTERS.get(stat.S_IFMT(st.st_mode), b"?")
    mtime, ctime = divmod(st.st_mtime_ns, 1_000_000_000), divmod(st.st_ctime_ns, 1_000_000_000)
    fields = (
        f" {st.st_dev} {st.st_ino} {st.st_size} {mtime[0]}.{mtime[1]:09d}0 {ctime[0]}."
        f"{ctime[1]:09d}0 {stat.S_IMODE(st.st_mode):o} {st.st_uid} {st.st_gid} "
    )
    return b"".join(
        (kind, fields.encode(), os.fsencode(path), b"\0", os.fsencode(link_target), b"\0")
    )


def _kind_and_path(record: Record) -> tuple[bytes, bytes]:
    fields = record[0]
    return fields[:1], fields.split(b" ", 9)[9]


def _parse(record: Record) -> Row:
    """The entry a record gives (without a digest if it is a file)."""
    fields, link = record
    kind, _dev, _ino, size, mtime, _ctime, perm, uid, gid, path = fields.split(b" ", 9)
    path = path.removeprefix(b"./")
    name = _KINDS.get(kind, "other")
    link_target = os.fsdecode(link)
    digest = "sha256:" + hashlib.sha256(link).hexdigest() if name == "symlink" else ""
    mode = _TYPE_BITS.get(kind, 0) | int(perm, 8)
    return (
        os.fsdecode(path), name, mode, int(size), _nanoseconds(mtime), int(uid), int(gid),
        digest, link_target,
    )  # fmt: skip


def _nanoseconds(seconds: bytes) -> int:
    """find's ``%T@`` in nanoseconds, exactly: whole seconds (rounded down, so negative
    before 1970) and a fraction that is always added."""
    whole, _, fraction = seconds.partition(b".")
    return int(whole) * 1_000_000_000 + int((fraction + b"000000000")[:9])


def _find_literal(path: str) -> str:
    """``path`` as a find ``-path`` pattern that matches only itself."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in path)


def _hash_file(path: str) -> str:
    try:
        with open(path, "rb", buffering=0) as f:
            h = hashlib.file_digest(f, "sha256")
    except OSError as err:
        raise ContextError(f"cannot read {path} in the build context: {err.strerror}") from None
    return "sha256:" + h.hexdigest()
