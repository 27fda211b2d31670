"""Blob files written and read around the page cache give exactly the bytes, on a disk
filesystem (O_DIRECT) and on tmpfs (refused there before Linux 6.6: plain I/O)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.oci import uncached
from kiln.oci.uncached import UncachedFile, read_uncached

# Around the 4 MiB buffer and the 4 KiB block: empty, under a block, exactly a buffer, a
# byte over, several buffers and a tail.
SIZES = [0, 1, 511, 4096, 4 << 20, (4 << 20) + 1, 3 * (4 << 20) + 10_000]


@pytest.fixture
def places(tmp_path: Path) -> Iterator[list[Path]]:
    """A directory on the tests' disk and, where there is one, one on tmpfs."""
    if not Path("/dev/shm").is_dir():
        yield [tmp_path]
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        yield [tmp_path, Path(shm)]


@pytest.mark.parametrize("size", SIZES)
def test_written_and_read_back_byte_for_byte(places: list[Path], size: int) -> None:
    data = os.urandom(size)
    for place in places:
        path = place / "blob"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            file = UncachedFile(fd)
            # in uneven pieces, as a tar stream arrives
            for start in range(0, size, 1_000_003):
                assert file.write(memoryview(data)[start : start + 1_000_003]) == len(
                    data[start : start + 1_000_003]
                )
            file.close()
        finally:
            os.close(fd)
        assert path.read_bytes() == data, place
        fd = os.open(path, os.O_RDONLY)
        try:
            whole = read_uncached(fd)
        finally:
            os.close(fd)
        assert (bytes(whole) if whole is not None else b"") == data, place


def test_on_disk_the_written_blob_takes_no_page_cache(tmp_path: Path) -> None:
    filesystem = subprocess.run(
        ["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    if filesystem not in ("ext2/ext3", "xfs", "btrfs"):
        pytest.skip(f"{tmp_path} is on {filesystem}, not a disk filesystem known to take O_DIRECT")
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        file = UncachedFile(fd)
        file.write(os.urandom(8 << 20))  # two whole buffers: no tail through the cache
        file.close()
    finally:
        os.close(fd)
    resident = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert path.stat().st_size == 8 << 20
    assert int(resident) == 0


def test_a_file_over_the_limit_is_mapped_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(100_000)
    (tmp_path / "big").write_bytes(data)
    monkeypatch.setattr(uncached, "READ_WHOLE_LIMIT", 10_000)
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    try:
        mapped = read_uncached(fd)
    finally:
        os.close(fd)
    assert mapped is not None and bytes(mapped) == data
    with pytest.raises(TypeError):  # a read-only map of the file, not a copy in memory
        mapped[0:1] = b"x"
