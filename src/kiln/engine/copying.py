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
import posixpath
import stat
import subprocess
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from kiln import tree
from kiln.context import ContextEntry, PatternMatcher, match_glob
from kiln.errors import KilnError
from kiln.tree import Owner, Tree, TreeError, opened, proc_path

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class DeferredCopy:
    """A whole-directory copy, done in the step's upper dir once the overlay is unmounted:
    the upper dir gets exactly what copying through the overlay would have put there, at
    a file creation (or a hard link) per file instead of the overlay's. ``source`` and
    ``target`` are resolved paths in the context and the image. ``plain``: cp's semantics
    (root's, modes and hard links kept, the directory's own mode and mtime the source's)."""

    source: str
    target: str
    owner: Owner
    mode: int | None
    visible: set[str] | None
    exclude: PatternMatcher | None
    plain: bool
    # A target that was there already: it and the directories above it, as the lower
    # layers have them (path, mode, uid, gid, mtime), for the upper dir to copy up. What
    # the copy writes there merges with what is below as the overlay would have merged it:
    # an upper directory over a lower one shows both, any other upper entry hides the
    # lower one, as the removal the overlay would have made first.
    existing: tuple[tuple[str, int, int, int, int], ...] = ()
    # Whether the layers below have entries in the target: the copy's whiteouts (see
    # ``_copy_delta``) would hide those too, so it is never made as a delta.
    over_lower: bool = False


Deferred = list[DeferredCopy]

# What a directory copy wrote, by path below the copied directory: the file's or
# symlink's kind, digest (as the context scan has it), mtime and mode in the layer.
Manifest = dict[str, tuple[str, str, int, int]]


@dataclass
class Reuse:
    """An incremental copy: files the last copy of the same step wrote (``previous``, the
    copied directory in its snapshot, and its ``manifest``) are hard-linked from there when
    the context scan has them alike; the rest is copied. A store's snapshots are never
    written again, so sharing their inodes is safe; the context's never are shared.

    A file is linked on what the scan and the manifest say, with no stat of either side:
    the manifest marks the files it shares an inode with ("linked"), which are copied, so
    no two paths of a layer become one inode that a full copy would keep apart."""

    previous: int | None
    manifest: Manifest
    entries: Mapping[str, ContextEntry]
    hard_links: Collection[str] = ()  # context paths sharing an inode (ContextSnapshot's)
    owner: Owner = (0, 0)
    top: int = -1  # the copied directory in the upper dir, where hard-link groups point
    written: Manifest = field(default_factory=dict)
    # cp --preserve=links: a source inode copied already, by where it went (plain copies)
    groups: dict[tuple[int, int], str] = field(default_factory=dict)
    # paths taken as they are from ``previous``: linked, or in a delta left to it
    linked: set[str] = field(default_factory=set)
    # Whether the copy may be made as a delta: only its changes, in an upper dir that is
    # mounted over the last copy's snapshot (whole, and holding nothing but the copy).
    delta: bool = False


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
    creates, to be done in the overlay's upper dir once it is unmounted (see
    ``DeferredCopy`` and ``copy_deferred``)."""
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
                where = image.relative(target_dir) if deferred is not None else None
                if deferred is not None and where is not None:
                    existing = () if new or not where else _existing(image, where)
                    deferred.append(DeferredCopy(relative, where, owner, mode, visible, exclude,
                                                 plain and new, existing,
                                                 bool(tree.listdir(target_dir))))  # fmt: skip
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


def _existing(image: Tree, where: str) -> tuple[tuple[str, int, int, int, int], ...]:
    """``where`` and each directory above it, with the metadata the image has for them."""
    parts = where.split("/")
    found = []
    for depth in range(1, len(parts) + 1):
        path = "/".join(parts[:depth])
        with opened(image.directory(path, links=False)) as fd:
            st = os.stat(fd)
        found.append((path, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns))
    return tuple(found)


def _copy_up(layer: Tree, existing: tuple[tuple[str, int, int, int, int], ...]) -> None:
    """Make the directories ``existing`` names in an upper dir, as overlayfs's copy-up
    would: same mode, owner and mtime (set deepest first, as making a child changes its
    parent's)."""
    for path, mode, uid, gid, _ in existing:
        parent, _, name = path.rpartition("/")
        with opened(layer.directory(parent, links=False)) as parent_fd:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                continue
            tree.set_metadata(parent_fd, name, owner=(uid, gid), mode=mode)
    for path, _, _, _, mtime in reversed(existing):
        parent, _, name = path.rpartition("/")
        with opened(layer.directory(parent, links=False)) as parent_fd:
            tree.set_metadata(parent_fd, name, mtime_ns=mtime)


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


def copy_deferred(copy: DeferredCopy, context: Tree, layer: Tree, reuse: Reuse) -> Manifest:
    """Do ``copy`` in ``layer``, an unmounted upper dir; what it wrote, for the next copy of
    the same step to reuse. A plain first copy is coreutils' (fastest when every file is
    new); the others are kiln's, linking what ``reuse`` allows, or, where it allows a
    delta, writing only what changed (``reuse.delta`` says whether it did)."""
    _copy_up(layer, copy.existing)
    with (
        opened(context.directory(copy.source)) as source_dir,
        opened(layer.directory(copy.target, links=False)) as target_dir,
    ):
        prefix = copy.source + "/" if copy.source else ""
        below = [e for e in reuse.entries.values() if e.path.startswith(prefix)]
        if copy.plain and (reuse.previous is None or any(e.kind == "other" for e in below)):
            cp_contents(source_dir, target_dir)  # (cp copies FIFOs and devices too)
            return _recorded(below, prefix, None, reuse.hard_links)
        reuse.owner, reuse.top = copy.owner, target_dir
        reuse.delta = reuse.delta and _copy_delta(copy, below, context, layer, target_dir, reuse)
        if not reuse.delta:
            _copy_contents(source_dir, copy.source, target_dir, copy.owner, copy.mode,
                           copy.visible, copy.exclude, "", reuse, copy.plain,
                           reuse.previous)  # fmt: skip
        if copy.plain:  # as cp: the directory itself takes the source's mode and mtime
            st = os.stat(source_dir)
            os.chmod(proc_path(target_dir), stat.S_IMODE(st.st_mode))
            os.utime(proc_path(target_dir), ns=(st.st_atime_ns, st.st_mtime_ns))
        return reuse.written


def _recorded(
    below: list[ContextEntry], prefix: str, mode: int | None, hard_links: Collection[str]
) -> Manifest:
    """The manifest a copy of these context entries (all below ``prefix``) makes, as the
    scan has them: files, symlinks and directories (devices, FIFOs and sockets are not
    copied); a file of a hard-link group is "linked"."""
    return {
        e.path[len(prefix) :]: (
            "linked" if e.path in hard_links and e.kind != "dir" else e.kind,
            e.digest, e.mtime_ns, 0o777 if e.kind == "symlink" else _mode(e.mode, mode),
        )
        for e in below if e.kind in ("file", "symlink", "dir")
    }  # fmt: skip


def _copy_delta(
    copy: DeferredCopy,
    below: list[ContextEntry],
    context: Tree,
    layer: Tree,
    target_dir: int,
    reuse: Reuse,
) -> bool:
    """``copy`` as the changes from the last copy (see ``Reuse.delta``): changed and new
    entries, whiteouts for deleted ones, and the directories they are in or whose own
    metadata changed. False, with nothing written, where the changes are too many for a
    delta to pay: then the copy is made whole."""
    prefix = copy.source + "/" if copy.source else ""
    wanted = _recorded(below, prefix, copy.mode, reuse.hard_links)

    def source(path: str) -> int:
        return context.directory(posixpath.join(copy.source, path), links=False)

    def target(path: str) -> int:
        return layer.directory(posixpath.join(copy.target, path), links=False)

    changed = [p for p, w in wanted.items() if w[0] == "linked" or reuse.manifest.get(p) != w]
    whiteouts: list[str] = []
    for path in sorted(p for p in reuse.manifest if p not in wanted):
        parent = path.rpartition("/")[0]
        if parent and (wanted.get(parent, ("",))[0] != "dir" or _under(parent, whiteouts)):
            continue  # hidden already: by what replaced its directory, or its whiteout
        whiteouts.append(path)
    directories = {p for p in changed if wanted[p][0] == "dir"}
    for path in (*changed, *whiteouts):
        parent = path.rpartition("/")[0]
        while parent and parent not in directories:
            directories.add(parent)
            parent = parent.rpartition("/")[0]
    files = [p for p in changed if wanted[p][0] != "dir"]
    if len(files) + len(whiteouts) + len(directories) > max(256, len(wanted) // 16):
        return False
    for path in sorted(directories):
        parent, _, name = path.rpartition("/")
        with opened(target(parent)) as parent_fd:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
    try:
        for path in whiteouts:  # overlayfs's: a 0/0 character device
            parent, _, name = path.rpartition("/")
            with opened(target(parent)) as parent_fd:
                os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=parent_fd)
    except PermissionError:  # no device nodes here (a user namespace): made whole, then
        tree.clear(target_dir)
        return False
    for path in files:
        parent, _, name = path.rpartition("/")
        with opened(source(parent)) as from_dir, opened(target(parent)) as to_dir:
            if wanted[path][0] == "linked":
                _copy_grouped(reuse, from_dir, name, to_dir, path, copy.mode)
            else:
                st = _copy_entry(from_dir, name, to_dir, name, copy.owner, copy.mode)
                _written(reuse, st, prefix + path, path, copy.mode)
    for path in sorted(directories, reverse=True):  # deepest first: making one changes those above
        parent, _, name = path.rpartition("/")
        with opened(source(path)) as from_fd, opened(target(parent)) as to:
            st = os.stat(from_fd)
            dir_mode = _mode(st.st_mode, copy.mode)
            tree.set_metadata(to, name, owner=copy.owner, mode=dir_mode, mtime_ns=st.st_mtime_ns)
            reuse.written[path] = ("dir", "", st.st_mtime_ns, dir_mode)
    changed_set = set(changed)
    for path, entry in wanted.items():
        if path not in changed_set:
            reuse.written[path] = entry
            if entry[0] != "dir":
                reuse.linked.add(path)
    return True


def _under(path: str, directories: list[str]) -> bool:
    """Whether ``path`` is at or below one of ``directories``."""
    return any(path == d or path.startswith(d + "/") for d in directories)


def _copy_contents(
    source_dir: int,
    relative: str,
    target_dir: int,
    owner: Owner,
    mode: int | None,
    visible: set[str] | None,
    exclude: PatternMatcher | None,
    inner: str,
    reuse: Reuse | None = None,
    links: bool = False,
    previous: int | None = None,
) -> None:
    """The contents of ``source_dir`` into ``target_dir``; with ``reuse``, files the last
    copy wrote in ``previous`` (this level's directory in its snapshot, opened one name at a
    time without following a symlink) are linked from there where they are still alike."""
    for name, is_dir in _listing(source_dir):
        child_relative = f"{relative}/{name}" if relative else name
        child_inner = f"{inner}/{name}" if inner else name
        if visible is not None and child_relative not in visible:
            continue
        excluded = exclude is not None and exclude.matches(child_inner)
        if excluded and not (
            is_dir and exclude is not None and exclude.may_include_under(child_inner)
        ):
            continue
        if not is_dir:
            if reuse is None:
                _copy_entry(source_dir, name, target_dir, name, owner, mode)
            elif links and child_relative in reuse.hard_links:
                _copy_grouped(reuse, source_dir, name, target_dir, child_inner, mode)
            elif not _reused(reuse, previous, name, target_dir, child_relative, child_inner,
                             mode):  # fmt: skip
                st = _copy_entry(source_dir, name, target_dir, name, owner, mode)
                _written(reuse, st, child_relative, child_inner, mode)
            continue
        st = os.stat(name, dir_fd=source_dir, follow_symlinks=False)
        try:
            there = os.stat(name, dir_fd=target_dir, follow_symlinks=False)
        except FileNotFoundError:
            there = None
        if there is None or not stat.S_ISDIR(there.st_mode):
            tree.remove(target_dir, name)  # a symlink there is replaced, never followed
            os.mkdir(name, 0o700, dir_fd=target_dir)
        child_previous = _child(previous, name)
        try:
            with (
                opened(os.open(name, _DIR, dir_fd=source_dir)) as child_source,
                opened(os.open(name, _DIR, dir_fd=target_dir)) as child_target,
            ):
                _copy_contents(child_source, child_relative, child_target, owner, mode,
                               visible, exclude, child_inner, reuse, links,
                               child_previous)  # fmt: skip
        finally:
            if child_previous is not None:
                os.close(child_previous)
        dir_mode = mode if mode is not None else stat.S_IMODE(st.st_mode)
        tree.set_metadata(target_dir, name, owner=owner, mode=dir_mode, mtime_ns=st.st_mtime_ns)
        if reuse is not None:
            reuse.written[child_inner] = ("dir", "", st.st_mtime_ns, dir_mode)


def _listing(directory: int) -> list[tuple[str, bool]]:
    """(name, is a directory) of what ``directory`` holds, sorted; from the directory's
    own listing (its entries' types), not a stat of each."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    with opened(os.open(".", flags, dir_fd=directory)) as fd, os.scandir(fd) as entries:
        return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)


def _child(directory: int | None, name: str) -> int | None:
    """The directory ``name`` in ``directory``, never through a symlink; None if not one."""
    if directory is None:
        return None
    try:
        return os.open(name, _DIR, dir_fd=directory)
    except OSError:
        return None


def _reused(
    reuse: Reuse,
    previous: int | None,
    name: str,
    target_dir: int,
    relative: str,
    inner: str,
    mode: int | None,
) -> bool:
    """Whether the file or symlink ``name`` was hard-linked from the last copy's, which
    wrote it from the content, mode and mtime the scan has for it now."""
    entry = reuse.entries.get(relative)
    if previous is None or entry is None or entry.kind not in ("file", "symlink"):
        return False
    wanted = (entry.kind, entry.digest, entry.mtime_ns,
              0o777 if entry.kind == "symlink" else _mode(entry.mode, mode))  # fmt: skip
    if inner in reuse.linked or reuse.manifest.get(inner) != wanted:
        return False  # (linked once already, by another source of the step: copied over)
    try:
        os.link(name, name, src_dir_fd=previous, dst_dir_fd=target_dir, follow_symlinks=False)
    except OSError:  # gone from a damaged store, or the inode's link count is at its limit
        return False
    reuse.linked.add(inner)
    reuse.written[inner] = wanted
    return True


def _copy_grouped(
    reuse: Reuse, source_dir: int, name: str, target_dir: int, inner: str, mode: int | None
) -> None:
    """A file of a hard-link group, as cp keeps them: a link to the group's first copy,
    or the first copy. Never linked from the last copy, so it is "linked" in the manifest."""
    st = os.stat(name, dir_fd=source_dir, follow_symlinks=False)
    kind = "symlink" if stat.S_ISLNK(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else ""
    first = reuse.groups.get((st.st_dev, st.st_ino))
    if first is not None:
        os.link(first, name, src_dir_fd=reuse.top, dst_dir_fd=target_dir, follow_symlinks=False)
    else:
        st = _copy_entry(source_dir, name, target_dir, name, reuse.owner, mode)
        if kind:
            reuse.groups[(st.st_dev, st.st_ino)] = inner
    if kind:
        wanted = 0o777 if kind == "symlink" else _mode(st.st_mode, mode)
        reuse.written[inner] = ("linked", "", st.st_mtime_ns, wanted)


def _written(reuse: Reuse, st: os.stat_result, relative: str, inner: str, mode: int | None) -> None:
    """Put a file just copied in the manifest, as the scan has it."""
    entry = reuse.entries.get(relative)
    kind = "symlink" if stat.S_ISLNK(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else ""
    if entry is not None and entry.kind == kind and entry.mtime_ns == st.st_mtime_ns:
        wanted = 0o777 if kind == "symlink" else _mode(st.st_mode, mode)
        reuse.written[inner] = (kind, entry.digest, st.st_mtime_ns, wanted)


def _mode(st_mode: int, mode: int | None) -> int:
    """A copied file's mode in the layer: ``--chmod``'s, or the source's."""
    return mode if mode is not None else stat.S_IMODE(st_mode)


def _copy_entry(
    source_dir: int, name: str, target_dir: int, target: str, owner: Owner, mode: int | None
) -> os.stat_result:
    """One file or symlink (devices, FIFOs and sockets are not copied, as from a context);
    the source's stat."""
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
        return st
    tree.set_metadata(
        target_dir, target, owner=owner,
        mode=None if stat.S_ISLNK(st.st_mode) else _mode(st.st_mode, mode),
        mtime_ns=st.st_mtime_ns,
    )  # fmt: skip
    return st


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
