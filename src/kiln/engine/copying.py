"""The file copies of COPY and ADD: from a source tree (the context, a stage, a checkout)
into an image's root filesystem, both untrusted.

Both sides are ``kiln.tree.Tree``s. Source paths arrive resolved inside their tree (see
``Tree.canonical``); every directory is then opened relative to the one above it with
``O_NOFOLLOW``, every file is created with ``O_EXCL | O_NOFOLLOW`` after whatever was
there is removed, and metadata is set through descriptors: a symlink in either tree is
copied as a symlink or replaced, never followed out.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator

from kiln import tree
from kiln.context import PatternMatcher, match_glob
from kiln.errors import KilnError
from kiln.tree import Owner, Tree, TreeError, opened, proc_path

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Whole-directory copies into directories the step created, done once the overlay is
# unmounted: (source directory in the context, target directory in the image), both
# resolved paths relative to their roots.
Deferred = list[tuple[str, str]]


def makedirs(image: Tree, path: str, owner: Owner) -> int:
    """An ``O_PATH`` descriptor of the image's directory ``path``, made where missing (owned
    by ``owner``); the image's symlinks on the way are followed inside it."""
    try:
        return image.directory(path, make=owner)
    except (NotADirectoryError, FileExistsError):
        raise KilnError(f"cannot create directory {path}: a file is in the way") from None
    except TreeError as err:
        raise KilnError(f"cannot create directory {path}: {err}") from None


def copy_into(
    source: Tree,
    relative: str,
    image: Tree,
    dest: str,
    owner: Owner,
    mode: int | None,
    visible: set[str] | None,
    exclude: PatternMatcher | None = None,
    deferred: Deferred | None = None,
    name: str = "",
) -> None:
    """Docker's COPY rules: a directory's contents go into dest; a file goes to dest, or
    into it when dest ends with / or is a directory, under ``name`` (by default its own:
    a symlink named as a source and followed keeps the name it was given by). ``relative``
    is resolved already; ``exclude`` (``--exclude``) patterns match paths relative to the
    directory copied.

    ``deferred``, where given, takes a whole-directory copy into a directory this call
    creates, to be done in the overlay's upper dir once it is unmounted: no lower layer
    has anything below a new directory, so the upper dir gets exactly what the overlay
    would have put there."""
    entry = source.entry(relative)
    with opened(entry.parent):
        st = entry.lstat()
        if st is None:
            raise KilnError(f"{relative}: not found")
        if stat.S_ISDIR(st.st_mode):
            target = dest.rstrip("/") or "/"
            new = not _resolves(image, target)
            with (
                opened(source.directory(relative)) as source_dir,
                opened(makedirs(image, target, owner)) as target_dir,
            ):
                plain = visible is None and exclude is None and owner == (0, 0) and mode is None
                if new and plain and deferred is not None:
                    where = image.relative(target_dir)
                    if where is not None:
                        deferred.append((relative, where))
                        return
                if new and plain:
                    cp_contents(source_dir, target_dir)
                else:
                    _copy_contents(source_dir, relative, target_dir, owner, mode, visible,
                                   exclude, "")  # fmt: skip
            return
        into_dir = dest.endswith("/") or image.is_dir(dest)
        target = f"{dest.rstrip('/')}/{name or entry.name}" if into_dir else dest
        with opened(makedirs(image, os.path.dirname(target.rstrip("/")), owner)) as parent:
            _copy_entry(entry.parent, entry.name, parent, os.path.basename(target.rstrip("/")),
                        owner, mode)  # fmt: skip


def _resolves(image: Tree, path: str) -> bool:
    """Whether ``path`` leads somewhere in the image (a dangling symlink does not)."""
    fd = image.lookup(path)
    if fd is not None:
        os.close(fd)
    return fd is not None


def cp_contents(source_dir: int, target_dir: int) -> None:
    """A whole directory's contents, owned by root, by coreutils (the fast common case),
    into a directory nothing else is in: given as ``/proc/self/fd`` paths, so cp reaches
    exactly these two directories."""
    result = subprocess.run(
        ["cp", "-R", "--no-dereference", "--preserve=mode,timestamps,links",
         "--no-target-directory", proc_path(source_dir) + "/.", proc_path(target_dir) + "/."],
        capture_output=True, text=True, pass_fds=(source_dir, target_dir),
    )  # fmt: skip
    if result.returncode != 0:
        raise KilnError(f"cannot copy a directory: {result.stderr.strip()}")


def _copy_contents(
    source_dir: int,
    relative: str,
    target_dir: int,
    owner: Owner,
    mode: int | None,
    visible: set[str] | None,
    exclude: PatternMatcher | None,
    inner: str,
) -> None:
    for name in sorted(tree.listdir(source_dir)):
        child_relative = f"{relative}/{name}" if relative else name
        child_inner = f"{inner}/{name}" if inner else name
        if visible is not None and child_relative not in visible:
            continue
        st = os.stat(name, dir_fd=source_dir, follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        excluded = exclude is not None and exclude.matches(child_inner)
        if excluded and not (
            is_dir and exclude is not None and exclude.may_include_under(child_inner)
        ):
            continue
        if not is_dir:
            _copy_entry(source_dir, name, target_dir, name, owner, mode)
            continue
        try:
            there = os.stat(name, dir_fd=target_dir, follow_symlinks=False)
        except FileNotFoundError:
            there = None
        if there is None or not stat.S_ISDIR(there.st_mode):
            tree.remove(target_dir, name)  # a symlink there is replaced, never followed
            os.mkdir(name, 0o700, dir_fd=target_dir)
        with (
            opened(os.open(name, _DIR, dir_fd=source_dir)) as child_source,
            opened(os.open(name, _DIR, dir_fd=target_dir)) as child_target,
        ):
            _copy_contents(child_source, child_relative, child_target, owner, mode, visible,
                           exclude, child_inner)  # fmt: skip
        tree.set_metadata(
            target_dir, name, owner=owner,
            mode=mode if mode is not None else stat.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns,
        )  # fmt: skip


def _copy_entry(
    source_dir: int, name: str, target_dir: int, target: str, owner: Owner, mode: int | None
) -> None:
    """One file or symlink (devices, FIFOs and sockets are not copied, as from a context)."""
    st = os.stat(name, dir_fd=source_dir, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        tree.remove(target_dir, target)
        os.symlink(os.readlink(name, dir_fd=source_dir), target, dir_fd=target_dir)
    elif stat.S_ISREG(st.st_mode):
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with (
            opened(os.open(name, flags, dir_fd=source_dir)) as data,
            opened(tree.create_file(target_dir, target)) as out,
        ):
            tree.copy_data(data, out)
    else:
        return
    tree.set_metadata(
        target_dir, target, owner=owner,
        mode=None if stat.S_ISLNK(st.st_mode) else (
            mode if mode is not None else stat.S_IMODE(st.st_mode)
        ),
        mtime_ns=st.st_mtime_ns,
    )  # fmt: skip


def write_file(image: Tree, target: str, content: bytes, owner: Owner, mode: int) -> None:
    """A file with ``content`` at the image's ``target`` (a heredoc of COPY)."""
    with opened(makedirs(image, os.path.dirname(target), owner)) as parent:
        name = os.path.basename(target)
        with opened(tree.create_file(parent, name)) as out:
            view = memoryview(content)
            while view:
                view = view[os.write(out, view) :]
        tree.set_metadata(parent, name, owner=owner, mode=mode)


def glob(source: Tree, pattern: str) -> Iterator[tuple[str, str]]:
    """(path as the pattern names it, its place in the tree) of what ``pattern`` matches in
    ``source``: the part before the first wildcard is resolved inside the tree, the rest
    is walked without following symlinks. A match that is a symlink is not resolved here."""
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if set("*?[") & set(part))
    named = "/".join(parts[:fixed])
    start = source.canonical(named, follow=True) if named else ""
    if start is None or not source.is_dir(start):
        return
    depth = len(parts)
    base = source.host_path(start)
    for directory, dirs, files in os.walk(base):
        below = os.path.relpath(directory, base)
        below = "" if below == "." else below
        level = fixed + (below.count("/") + 1 if below else 0)
        for name in (*dirs, *files):
            tail = f"{below}/{name}" if below else name
            path = f"{named}/{tail}" if named else tail
            if level + 1 == depth and match_glob(pattern, path):
                yield path, f"{start}/{tail}" if start else tail
        if level + 1 >= depth:
            dirs.clear()
