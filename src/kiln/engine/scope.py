"""Paths inside an image's root filesystem, resolved as the image would resolve them.

A step's root filesystem is a directory on the host, and the image's symlinks are the
image's: ``/app -> /etc`` means the image's /etc. Joining paths on the host would follow
such a link out of the root filesystem, so kiln resolves every image path here first,
as BuildKit's FollowSymlinkInScope does: absolute links start again at the image's root,
and ``..`` never climbs above it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kiln.errors import KilnError

_MAX_LINKS = 40  # as Linux's ELOOP limit


def in_scope(rootfs: Path, path: str) -> Path:
    """``path`` (an image path) as a host path below ``rootfs``, with no symlink on the way.

    Components that do not exist yet are appended as they are: creating them later
    cannot leave ``rootfs``.
    """
    resolved: list[str] = []
    pending = [part for part in path.split("/") if part][::-1]
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            resolved.append(part)  # not there (yet): nothing to follow
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise KilnError(f"too many levels of symbolic links in {path}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(part for part in reversed(target.split("/")) if part)
    return rootfs.joinpath(*resolved)
