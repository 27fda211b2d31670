"""What a build leaves behind: an image tarball, the results as JSON, and (or not) the
image itself."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, cast

from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.workflow.plugin import NoArgs, Phase, Plugin


@dataclass(frozen=True)
class CompressArgs:
    method: Literal["gzip", "xz", "zstd"] = "gzip"
    directory: str = "."  # where the tarball goes


@dataclass(frozen=True)
class Tarball:
    path: str
    size: int
    md5sum: str
    sha256sum: str


_SUFFIXES = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst"}


class Compress(Plugin[CompressArgs, Tarball]):
    """Save the image as a compressed tarball (``docker load`` reads it) and record its
    size and checksums."""

    key = "compress"
    phases = frozenset({Phase.POST_BUILD})

    def run(self) -> Tarball:
        workflow = self.workflow
        reference = Reference.parse(workflow.description.image)
        directory = Path(self.args.directory)
        directory.mkdir(parents=True, exist_ok=True)
        base = f"{reference.repository.replace('/', '-')}-{reference.tag or 'latest'}.tar"
        path = directory / (base + _SUFFIXES[self.args.method])
        workflow.engine.tag(workflow.built_image, workflow.description.image)
        partial = path.with_name(path.name + ".partial")
        try:
            with open(partial, "wb") as raw:
                md5, sha256 = hashlib.md5(), hashlib.sha256()
                hashing = _Hashing(raw, md5, sha256)
                with _compressor(self.args.method, hashing) as out:
                    workflow.engine.save(workflow.description.image, out)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        self.log(f"wrote {path}")
        return Tarball(str(path), path.stat().st_size, md5.hexdigest(), sha256.hexdigest())


class _Hashing:
    """A write-only file that checksums what it writes."""

    def __init__(self, target: IO[bytes], *hashes: hashlib._Hash) -> None:
        self.target = target
        self.hashes = hashes

    def write(self, data: bytes) -> int:
        for h in self.hashes:
            h.update(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _compressor(method: str, target: _Hashing) -> IO[bytes]:
    """A compressing writer into ``target``; closing it ends the stream, not ``target``."""
    if method == "gzip":
        from isal import igzip  # ISA-L: gzip several times faster than zlib

        return cast(IO[bytes], igzip.IGzipFile(fileobj=target, mode="wb", compresslevel=1))  # type: ignore[no-untyped-call]
    if method == "xz":
        import lzma

        return cast(IO[bytes], lzma.LZMAFile(cast(IO[bytes], target), "wb"))
    import zstandard

    return cast(
        IO[bytes], zstandard.ZstdCompressor().stream_writer(cast(IO[bytes], target), closefd=False)
    )


@dataclass(frozen=True)
class StoreMetadataArgs:
    path: str  # the results JSON's file


@dataclass(frozen=True)
class StoredMetadata:
    path: str


class StoreMetadata(Plugin[StoreMetadataArgs, StoredMetadata]):
    """Write the build's results, as they stand when this exit plugin runs, to a JSON
    file (atomically: a reader never sees half of it)."""

    key = "store_metadata"
    phases = frozenset({Phase.EXIT})

    def run(self) -> StoredMetadata:
        path = Path(self.args.path)
        self.workflow.results.write(path)
        return StoredMetadata(str(path))


@dataclass(frozen=True)
class Removed:
    image_id: str  # "" when there was nothing to remove


class RemoveBuiltImage(Plugin[NoArgs, Removed]):
    """Remove the built image (and the names given to it) once everything else is done."""

    key = "remove_built_image"
    phases = frozenset({Phase.EXIT})

    def run(self) -> Removed:
        workflow = self.workflow
        if not workflow.image_id:
            return Removed("")
        names = [workflow.description.image, *workflow.shared.tags]
        for name in names:
            if (
                workflow.engine.exists(name)
                and workflow.engine.inspect(name).id == workflow.image_id
            ):
                workflow.engine.remove(name)
        if workflow.engine.exists(workflow.image_id):
            workflow.engine.remove(workflow.image_id)
        if workflow.engine.exists(workflow.image_id):
            raise KilnError(f"image {workflow.image_id} is still there")
        return Removed(workflow.image_id)
