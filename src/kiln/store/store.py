"""The embedded image store: an OCI image layout plus a SQLite index, under one root.

``blobs/sha256/<hex>`` holds every blob, written to a temp file and renamed into place only
once its digest is verified, so a crash leaves at worst an orphan temp file. ``kiln.db``
records images and tags; ``index.json`` mirrors the tags so that tools reading OCI layouts
(skopeo ``oci:ROOT:TAG``, umoci) see the store as a plain layout. Writers take an exclusive
``flock`` on ``lock``; readers rely on SQLite's own consistency.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import marshal
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from kiln.config import default_root
from kiln.errors import KilnError
from kiln.oci.layer import HashingWriter
from kiln.oci.objects import (
    CONTAINERD_NAME,
    INDEX,
    MANIFEST,
    REF_NAME,
    Descriptor,
    InvalidObject,
    canonical_json,
    parse_digest,
    parse_manifest,
    sha256_digest,
)
from kiln.oci.uncached import UncachedFile
from kiln.reference import Reference

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    manifest TEXT PRIMARY KEY,   -- digest of the manifest blob
    config TEXT NOT NULL,        -- digest of the config blob: the image ID
    size INTEGER NOT NULL,       -- bytes of its layers
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,        -- a build step's cache key
    layer TEXT NOT NULL,         -- the diff_id of the layer it made; '' for no layer
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS copies (
    step TEXT PRIMARY KEY,       -- a COPY's cache key without its files: the same step
    layer TEXT NOT NULL,         -- the diff_id of the layer its last run made
    manifest BLOB NOT NULL       -- marshalled: per directory copied, each file's origin
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,       -- full reference: docker.io/library/busybox:latest
    manifest TEXT NOT NULL REFERENCES images(manifest)
);
CREATE TABLE IF NOT EXISTS sources (
    blob TEXT NOT NULL,          -- a blob's digest
    registry TEXT NOT NULL,      -- a repository known to hold it, for cross-repository mounts
    repository TEXT NOT NULL,
    PRIMARY KEY (blob, registry, repository)
);
CREATE TABLE IF NOT EXISTS repo_digests (
    manifest TEXT NOT NULL REFERENCES images(manifest) ON DELETE CASCADE,
    name TEXT NOT NULL,          -- registry/repository@digest: where it was pulled or pushed
    PRIMARY KEY (manifest, name)
);
CREATE TABLE IF NOT EXISTS compressed (
    layer TEXT NOT NULL,         -- the diff_id of a layer stored uncompressed
    algorithm TEXT NOT NULL,     -- gzip or zstd
    blob TEXT NOT NULL,          -- the digest of its compressed form, made for a push
    size INTEGER NOT NULL,
    PRIMARY KEY (layer, algorithm)
);
"""


_HEX = re.compile(r"[0-9a-f]+")


class StoreError(KilnError):
    """The store is missing something asked of it, or cannot be written."""


@dataclass(frozen=True)
class LastCopy:
    """The last run of a COPY step: its layer, what it wrote per directory copied (the
    owner and the manifest), and whether GNU tar wrote the layer."""

    layer: str
    copies: dict[str, tuple[tuple[int, int], dict[str, Any]]]
    gnu_tar: bool
    dirs: bool = False  # whether the manifests list directories (what a delta needs)


@dataclass(frozen=True)
class StoredImage:
    """An image in the store: its manifest and config, parsed, and its tags."""

    manifest_digest: str
    manifest: dict[str, Any]
    config_digest: str
    config: dict[str, Any]
    tags: tuple[str, ...]
    size: int
    created: float

    @property
    def id(self) -> str:
        return self.config_digest

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_json(d) for d in self.manifest["layers"]]

    @property
    def diff_ids(self) -> list[str]:
        """The digest of each layer uncompressed (a pulled layer's blob is compressed)."""
        return [str(d) for d in (self.config.get("rootfs") or {}).get("diff_ids") or []]


class Store:
    """Blobs, images and tags under ``root`` (``$KILN_ROOT`` by default)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.blobs = self.root / "blobs" / "sha256"
        self.tmp = self.root / "tmp"
        try:
            # Private to the user running kiln: its snapshots hold images' setuid binaries
            # and device nodes, its caches what builds fetched.
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stat.S_IMODE(self.root.stat().st_mode) != 0o700:
                self.root.chmod(0o700)
            self.blobs.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(exist_ok=True)
            layout = self.root / "oci-layout"
            if not layout.exists():
                self.write_atomic(layout, b'{"imageLayoutVersion":"1.0.0"}')
        except OSError as err:
            raise StoreError(f"cannot use {self.root} as kiln's store: {err.strerror}") from None
        # One connection, shared by a build's threads (stages run in parallel): every use of
        # it holds ``self._db_lock``.
        self.db = sqlite3.connect(
            self.root / "kiln.db", timeout=60, isolation_level=None, check_same_thread=False
        )
        self._db_lock = threading.RLock()
        self.db.execute("PRAGMA foreign_keys=ON")
        # Switching a new database to WAL needs it alone, and SQLite answers "locked" at
        # once rather than waiting: processes opening the store together take turns.
        with self.lock():
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            if not (self.root / "index.json").exists():
                self._write_index()

    def close(self) -> None:
        self.db.close()

    # -- locking and atomic files

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes: held while images, tags or index.json change."""
        with _flock(self.root / "lock", fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held (shared) by whoever stores blobs before recording the image that uses them,
        so that garbage collection, which needs it exclusively, never takes them away."""
        with _flock(self.root / "gc.lock", fcntl.LOCK_SH):
            yield

    def write_atomic(self, path: Path, data: bytes) -> None:
        """``path`` holds ``data`` whole, or what it held before, even after a crash."""
        fd, temp = tempfile.mkstemp(dir=self.tmp if self.tmp.exists() else path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
            _sync_directory(path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    # -- blobs

    def blob_path(self, digest: str) -> Path:
        try:
            return self.blobs / parse_digest(digest).removeprefix("sha256:")
        except InvalidObject:
            raise StoreError(f"unsupported digest {digest!r}") from None

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store") from None

    def put_blob(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; returns its digest (checked against ``expected`` if given)."""
        digest = sha256_digest(data)
        if expected and expected != digest:
            raise StoreError(f"blob content does not match its digest {expected}")
        path = self.blob_path(digest)
        if not path.exists():
            self.write_atomic(path, data)
        return digest

    def put_blob_stream(
        self, write: Callable[[HashingWriter], None], expected: str | None = None
    ) -> tuple[str, int]:
        """Store what ``write`` writes, hashing it on the way; returns (digest, size). With
        ``expected``, content of another digest is refused and nothing is stored."""
        fd, temp = tempfile.mkstemp(dir=self.tmp)
        try:
            try:
                file = UncachedFile(fd)
                hashing = HashingWriter(cast(BinaryIO, file))
                write(hashing)
                file.close()
            finally:
                os.close(fd)
            digest = hashing.digest
            if expected and digest != expected:
                raise StoreError(f"blob content does not match its digest {expected}")
            path = self.blob_path(digest)
            if path.exists():
                os.unlink(temp)
            else:
                os.replace(temp, path)
                _sync_directory(self.blobs)  # the rename too must survive a crash
            return digest, hashing.size
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    # -- build cache

    def cached_layer(self, key: str) -> tuple[str, int, float] | None:
        """(diff_id, size, time of the build that made it) of a step with this key ('' for
        no layer), if its layer is still here."""
        with self._db_lock:
            row = self.db.execute(
                "SELECT layer, size, created FROM cache WHERE key = ?", (key,)
            ).fetchone()
        if row is None or (row[0] and not self.has_blob(row[0])):
            return None
        return str(row[0]), int(row[1]), float(row[2])

    def remember_copy(
        self,
        step: str,
        diff_id: str,
        copies: dict[str, tuple[tuple[int, int], Any]],
        *,
        gnu_tar: bool,
    ) -> None:
        """What the last run of a COPY step wrote, by directory copied: the owner and the
        manifest (see ``kiln.engine.copying.Reuse``); and whether GNU tar wrote its layer
        (see ``kiln.oci.layer.splice_dir_layer``)."""
        # (marshal: 20,000 files in 10 ms); "dirs": the manifests list directories too
        record = {"gnu_tar": gnu_tar, "copies": copies, "dirs": True}
        data = marshal.dumps(record)
        with self._db_lock:
            self.db.execute("INSERT OR REPLACE INTO copies VALUES (?, ?, ?)", (step, diff_id, data))

    def last_copy(self, step: str) -> LastCopy | None:
        """The last run of a COPY step, if one is remembered."""
        with self._db_lock:
            row = self.db.execute(
                "SELECT layer, manifest FROM copies WHERE step = ?", (step,)
            ).fetchone()
        if row is None:
            return None
        try:
            record = marshal.loads(row[1])
            copies = {
                target: ((int(owner[0]), int(owner[1])), dict(files))
                for target, (owner, files) in record["copies"].items()
            }
            return LastCopy(row[0], copies, bool(record["gnu_tar"]), bool(record.get("dirs")))
        except (EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return None  # a damaged row, or another version's: the copy is made in full

    def remember_layer(self, key: str, diff_id: str, size: int, created: float) -> None:
        with self._db_lock:
            self.db.execute(
                "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", (key, diff_id, size, created)
            )

    # -- compressed forms of layers (made once, for pushes)

    def compressed_layer(self, diff_id: str, algorithm: str) -> tuple[str, int] | None:
        """(digest, size) of ``diff_id`` compressed with ``algorithm``, if still stored."""
        with self._db_lock:
            row = self.db.execute(
                "SELECT blob, size FROM compressed WHERE layer = ? AND algorithm = ?",
                (diff_id, algorithm),
            ).fetchone()
        if row is None or not self.has_blob(row[0]):
            return None
        return str(row[0]), int(row[1])

    def remember_compressed(self, diff_id: str, algorithm: str, digest: str, size: int) -> None:
        with self._db_lock:
            self.db.execute(
                "INSERT OR REPLACE INTO compressed VALUES (?, ?, ?, ?)",
                (diff_id, algorithm, digest, size),
            )

    # -- where blobs are known to live in registries

    def remember_source(self, digest: str, registry: str, repository: str) -> None:
        with self._db_lock:
            self.db.execute(
                "INSERT OR IGNORE INTO sources VALUES (?, ?, ?)", (digest, registry, repository)
            )

    def sources(self, digest: str, registry: str) -> list[str]:
        """Repositories of ``registry`` that are known to hold ``digest``."""
        with self._db_lock:
            rows = self.db.execute(
                "SELECT repository FROM sources WHERE blob = ? AND registry = ?",
                (digest, registry),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def remember_repo_digest(self, manifest: str, name: Reference) -> None:
        """That the image ``manifest`` is ``name`` (``registry/repository@digest``) in a
        registry: pulled from it, or pushed to it (where its manifest may be another)."""
        with self._db_lock:
            self.db.execute(
                "INSERT OR IGNORE INTO repo_digests VALUES (?, ?)", (manifest, str(name))
            )

    def repo_digests(self, manifest: str) -> list[str]:
        """What ``remember_repo_digest`` knows of an image, as docker's ``RepoDigests``."""
        with self._db_lock:
            rows = self.db.execute(
                "SELECT name FROM repo_digests WHERE manifest = ? ORDER BY name", (manifest,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    # -- images and tags

    def add_image(self, manifest: dict[str, Any], tags: list[Reference]) -> StoredImage:
        """Record an image whose config and layer blobs are already stored, and tag it."""
        return self.add_manifest(canonical_json(manifest), tags)

    def add_manifest(self, manifest_bytes: bytes, tags: list[Reference]) -> StoredImage:
        """``add_image`` for a manifest kept byte for byte (a pulled one keeps its digest)."""
        manifest = parse_manifest(manifest_bytes)
        config = Descriptor.from_json(manifest["config"])
        layers = [Descriptor.from_json(d) for d in manifest["layers"]]
        for blob in (config, *layers):
            if not self.has_blob(blob.digest):
                raise StoreError(f"cannot record image: blob {blob.digest} is not stored")
        with self.lock():
            digest = self.put_blob(manifest_bytes)
            self.db.execute(
                "INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?)",
                (digest, config.digest, sum(layer.size for layer in layers), time.time()),
            )
            for tag in tags:
                self.db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?)", (str(tag), digest))
            self._write_index()
        return self.image(digest)

    def tag(self, source: str, target: Reference) -> None:
        image = self.image(source)
        with self.lock():
            self.db.execute(
                "INSERT OR REPLACE INTO tags VALUES (?, ?)", (str(target), image.manifest_digest)
            )
            self._write_index()

    def resolve(self, name: str) -> str:
        """The manifest digest ``name`` stands for: an image ID (or unique prefix), or a tag."""
        with self._db_lock:
            return self._resolve(name)

    def _resolve(self, name: str) -> str:
        bare = name.removeprefix("sha256:")
        if len(bare) >= 4 and _HEX.fullmatch(bare):
            pattern = "sha256:" + bare + "%"
            rows = self.db.execute(
                "SELECT manifest FROM images WHERE config LIKE ? OR manifest LIKE ?",
                (pattern, pattern),
            )
            found = {str(r[0]) for r in rows}
            if len(found) > 1:
                raise StoreError(f"{name!r} matches several images; give more of the ID")
            if found:
                return found.pop()
        if "@sha256:" in name:  # name@digest: the manifest of that digest, if it is stored
            digest = "sha256:" + name.rpartition("@sha256:")[2]
            row = self.db.execute("SELECT manifest FROM images WHERE manifest = ?", (digest,))
            found = row.fetchone()
            if found is not None:
                return str(found[0])
        tag = self._tag_of(name)
        if tag is not None:
            row = self.db.execute("SELECT manifest FROM tags WHERE name = ?", (tag,)).fetchone()
            if row is not None:
                return str(row[0])
        raise StoreError(f"no such image: {name}")

    def _tag_of(self, name: str) -> str | None:
        try:
            return str(Reference.parse(name))
        except KilnError:
            return None

    def image(self, name: str) -> StoredImage:
        with self._db_lock:
            return self._image(name)

    def _image(self, name: str) -> StoredImage:
        digest = name if name.startswith("sha256:") and self._known(name) else self.resolve(name)
        row = self.db.execute(
            "SELECT config, size, created FROM images WHERE manifest = ?", (digest,)
        ).fetchone()
        if row is None:
            raise StoreError(f"no such image: {name}")
        tags = tuple(
            r[0]
            for r in self.db.execute(
                "SELECT name FROM tags WHERE manifest = ? ORDER BY name", (digest,)
            )
        )
        manifest = json.loads(self.read_blob(digest))
        config = json.loads(self.read_blob(row[0]))
        return StoredImage(digest, manifest, row[0], config, tags, row[1], row[2])

    def _known(self, digest: str) -> bool:
        row = self.db.execute("SELECT 1 FROM images WHERE manifest = ?", (digest,))
        return row.fetchone() is not None

    def images(self) -> list[StoredImage]:
        rows = self.db.execute("SELECT manifest FROM images ORDER BY created DESC").fetchall()
        return [self.image(r[0]) for r in rows]

    def remove(self, name: str, *, force: bool = False) -> list[str]:
        """``rmi``: untag ``name``; drop the image and its unshared blobs once untagged.

        Returns what was removed, as docker prints it (``Untagged:``/``Deleted:`` lines).
        """
        removed = []
        with self._collecting():
            digest = self.resolve(name)
            tags = [
                r[0] for r in self.db.execute("SELECT name FROM tags WHERE manifest = ?", (digest,))
            ]
            tag = self._tag_of(name)
            untag: list[str]
            if tag is not None and tag in tags:
                untag = [tag]
            elif len(tags) > 1 and not force:
                raise StoreError(
                    f"image {name} is tagged {len(tags)} times: remove the tags or use --force"
                )
            else:
                untag = tags
            for each in untag:
                self.db.execute("DELETE FROM tags WHERE name = ?", (each,))
                removed.append(f"Untagged: {Reference.parse(each).familiar}")
            if len(untag) == len(tags):
                config = self.image(digest).config_digest
                self.db.execute("DELETE FROM images WHERE manifest = ?", (digest,))
                removed.append(f"Deleted: {config}")
                self._collect_garbage()
            self._write_index()
        return removed

    def prune(self) -> tuple[list[str], int]:
        """Remove the build cache (ADD's downloads with it), untagged images and blobs
        nothing references: (the IDs of the images removed, bytes freed)."""
        with self._collecting():
            self.db.execute("DELETE FROM cache")
            self.db.execute("DELETE FROM copies")  # what incremental COPYs start from
            downloads = self.root / "cache" / "http"
            download_bytes = _tree_size(downloads)
            shutil.rmtree(downloads, ignore_errors=True)
            untagged = self.db.execute(
                "SELECT manifest, config FROM images"
                " WHERE manifest NOT IN (SELECT manifest FROM tags)"
            ).fetchall()
            for digest, _ in untagged:
                self.db.execute("DELETE FROM images WHERE manifest = ?", (digest,))
            freed = self._collect_garbage() + download_bytes
            self._write_index()
        return [str(config) for _, config in untagged], freed

    def prune_cache_mounts(self) -> tuple[int, int]:
        """Empty the ``RUN --mount=type=cache`` directories builds keep between them:
        (caches, bytes) freed. Builds hold the collector's lock shared while they run, so
        with it held exclusively here no build is using one."""
        caches = self.root / "cache-mounts"
        count = freed = 0
        with self._collecting():
            for path in sorted(caches.iterdir()) if caches.is_dir() else ():
                if path.is_dir() and not path.is_symlink():
                    freed += _tree_size(path)
                    shutil.rmtree(path)
                    count += 1
                else:
                    path.unlink()
        return count, freed

    @contextlib.contextmanager
    def _collecting(self) -> Iterator[None]:
        """For garbage collection: no writer in flight (they hold ``writing``), then the lock.
        Always in this order, the order writers take them in too."""
        with _flock(self.root / "gc.lock", fcntl.LOCK_EX), self.lock():
            yield

    def _collect_garbage(self) -> int:
        """Delete blobs no recorded image references, and stale temp files (``_collecting``)."""
        keep = {str(r[0]) for r in self.db.execute("SELECT layer FROM cache WHERE layer != ''")}
        for (digest,) in self.db.execute("SELECT manifest FROM images"):
            keep.add(digest)
            manifest = json.loads(self.read_blob(digest))
            keep.add(manifest["config"]["digest"])
            keep.update(layer["digest"] for layer in manifest["layers"])
        # A kept layer keeps its compressed forms, so that the next push need not redo them.
        for layer, blob in self.db.execute("SELECT layer, blob FROM compressed").fetchall():
            if layer in keep:
                keep.add(blob)
            else:
                self.db.execute("DELETE FROM compressed WHERE layer = ?", (layer,))
        for (blob,) in self.db.execute("SELECT DISTINCT blob FROM sources").fetchall():
            if blob not in keep:
                self.db.execute("DELETE FROM sources WHERE blob = ?", (blob,))
        freed = 0
        for path in self.blobs.iterdir():
            if "sha256:" + path.name not in keep:
                freed += path.stat().st_size
                path.unlink()
        for path in self.tmp.iterdir():
            if time.time() - path.stat().st_mtime > 3600:  # an interrupted write, long gone
                path.unlink()
        snapshots = self.root / "snapshots"
        if snapshots.is_dir():
            for path in snapshots.iterdir():
                unpacked_layer = len(path.name) == 64 and "-" not in path.name
                if unpacked_layer and "sha256:" + path.name not in keep:
                    freed += _tree_size(path)
                    shutil.rmtree(path, ignore_errors=True)
            # A layer kept as the changes from another (DIFF_ID.delta/{base,tree}, see
            # kiln.engine.snapshots) goes with its own layer, and with its base.
            for path in snapshots.glob("*.delta"):
                try:
                    base = (path / "base").read_text().removeprefix("sha256:")
                except OSError:
                    base = ""
                layer = "sha256:" + path.name.removesuffix(".delta")
                if layer not in keep or not base or not (snapshots / base).is_dir():
                    freed += _tree_size(path)
                    shutil.rmtree(path, ignore_errors=True)
        return freed

    def _write_index(self) -> None:
        """index.json from the tags table (untagged images are not in it)."""
        manifests = []
        rows = self.db.execute("SELECT t.name, t.manifest FROM tags t ORDER BY t.name").fetchall()
        for name, digest in rows:
            reference = Reference.parse(name)
            size = self.blob_path(digest).stat().st_size
            annotations = {CONTAINERD_NAME: name, REF_NAME: reference.tag or reference.digest}
            manifests.append(Descriptor(MANIFEST, digest, size, annotations).to_json())
        index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        self.write_atomic(self.root / "index.json", canonical_json(index))


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tree_size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


@contextlib.contextmanager
def _flock(path: Path, operation: int) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, operation)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
