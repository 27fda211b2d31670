"""Layer blobs written and read around the page cache (``O_DIRECT``).

A stored blob is synced to disk before it is named, so its pages need not stay in memory to
be written later; and a layer spliced from is read once, whole. Through the page cache, a
layer of a hundred megabytes first takes that many fresh pages, which on the VMs kiln is
built on costs several times the disk transfer itself (a 90 MB layer: 0.2 to 0.4 s written
through the cache, 0.05 s direct). Here the bytes go between the disk and memory kiln reuses.
Where a filesystem refuses O_DIRECT (tmpfs, some FUSE ones), both read and write as usual.
"""

from __future__ import annotations

import fcntl
import mmap
import os

# A multiple of every logical block size: O_DIRECT's unit for offsets, lengths and the
# buffer's address (an anonymous map is page-aligned).
_BUFFER = 4 << 20
_ALIGN = 4096
# Larger files are mapped from the page cache rather than read into memory whole.
READ_WHOLE_LIMIT = 512 << 20


class UncachedFile:
    """A write-only file over ``fd`` (at offset 0) that bypasses the page cache where the
    filesystem allows it. ``close`` writes the tail and syncs; the caller closes ``fd``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.direct = _set_direct(fd, True)
        self.buffer = mmap.mmap(-1, _BUFFER) if self.direct else None
        self.filled = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        if self.buffer is None:
            _write_all(self.fd, view)
            return len(view)
        while view:
            taken = min(len(view), _BUFFER - self.filled)
            self.buffer[self.filled : self.filled + taken] = view[:taken]
            self.filled += taken
            view = view[taken:]
            if self.filled == _BUFFER:
                self._drain()
        return len(data)

    def flush(self) -> None:
        """Nothing: what is buffered waits for a whole buffer (see ``close``)."""

    def close(self) -> None:
        """Write what is left (less than a buffer, so through the page cache: O_DIRECT
        takes whole blocks only) and sync it all to disk."""
        if self.buffer is not None:
            if self.filled:
                _set_direct(self.fd, False)
                self.direct = False
                self._drain()
            self.buffer.close()
            self.buffer = None
        os.fsync(self.fd)

    def _drain(self) -> None:
        assert self.buffer is not None
        with memoryview(self.buffer) as view:
            try:
                _write_all(self.fd, view[: self.filled])
            except OSError:
                if not self.direct:
                    raise
                # O_DIRECT refused at the first write after all (an odd alignment): plain
                # writes from here on. A refused direct write writes nothing.
                _set_direct(self.fd, False)
                self.direct = False
                _write_all(self.fd, view[: self.filled])
        self.filled = 0


def read_uncached(fd: int) -> mmap.mmap | None:
    """The whole file ``fd`` in anonymous memory, read around the page cache; a read-only
    map of it instead when it is larger than ``READ_WHOLE_LIMIT``; None when it is empty.
    Either way the map is exactly the file's size."""
    size = os.fstat(fd).st_size
    if not size:
        return None
    if size > READ_WHOLE_LIMIT:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    # O_DIRECT reads whole blocks into the buffer: read into a rounded-up map, then shrink
    # it to the file (mremap keeps the pages).
    memory = mmap.mmap(-1, size + -size % _ALIGN)
    direct = _set_direct(fd, True)
    try:
        with memoryview(memory) as view:
            done = 0
            while done < size:
                try:
                    count = os.preadv(fd, [view[done:]], done)
                except OSError:
                    if not direct:
                        raise
                    _set_direct(fd, False)
                    direct = False
                    continue
                if count == 0:
                    raise OSError(f"file ended at {done} bytes of {size}")
                done += count
    finally:
        if direct:
            _set_direct(fd, False)
    memory.resize(size)
    return memory


def _set_direct(fd: int, on: bool) -> bool:
    """Whether ``fd`` now has O_DIRECT as asked."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
    except OSError:
        return False
    return True


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]
