"""Incremental COPY: a COPY that misses the cache links what its last run copied and writes
only what changed, and the layer is byte for byte the one a full copy makes.

Each case builds a first state of the context, then a second one in the same store (the
incremental copy) and in a fresh store (the full copy), and compares the layers' digests.
SOURCE_DATE_EPOCH lies between the files' own mtimes and the build: the directory the copy
goes into was changed by the build, and only that mtime is clamped.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kiln.oci.layer import splice_dir_layer, write_dir_layer
from tests.engine.support import NEEDS_RUNC, invoke

pytestmark = NEEDS_RUNC

FILE_TIME = 1_600_000_000
EPOCH = "1700000000"

LONG_NAME = "src/" + "d" * 70 + "/" + "f" * 90 + ".py"  # past ustar's 100 and 155 bytes
# path -> content; "/" ends a directory; "-> X" is a symlink to X; "=> X" a hard link to X
Tree = dict[str, str]

FIRST: Tree = {
    "src/keep.py": "unchanged\n", "src/edit.py": "old\n", "src/gone.py": "deleted later\n",
    "src/to-dir": "a file, then a directory\n", "src/to-link": "a file, then a symlink\n",
    "src/link": "-> keep.py", "src/pkg/": "", "src/pkg/deep.py": "deep\n",
    "src/mode.sh": "echo\n", "src/same-size.txt": "aaaa\n", "src/secret.env": "ignored later\n",
    "src/debug.log": "excluded\n", "src/stable-link": "-> pkg/deep.py",
    LONG_NAME: "a long path: a PAX header\n", "src/ünïcode.py": "pax too\n",
    "src/pair-a": "one inode\n", "src/pair-b": "=> src/pair-a",
    "src/pkg-beside.py": "after pkg/ and all in it, in a tar's order\n",
}  # fmt: skip
SECOND: Tree = {
    "src/keep.py": "unchanged\n", "src/edit.py": "new content\n", "src/added.py": "added\n",
    "src/to-dir/": "", "src/to-dir/inside.py": "inside\n", "src/to-link": "-> pkg",
    "src/link": "-> edit.py", "src/pkg/": "", "src/pkg/deep.py": "deep\n",
    "src/mode.sh": "echo\n", "src/same-size.txt": "bbbb\n", "src/secret.env": "ignored later\n",
    "src/debug.log": "excluded\n", "src/stable-link": "-> pkg/deep.py",
    LONG_NAME: "a long path: a PAX header\n", "src/ünïcode.py": "pax too\n",
    "src/pair-a": "one inode\n", "src/pair-b": "one inode\n",
    "src/twin-a": "linked now\n", "src/twin-b": "=> src/twin-a",
    "src/pkg-beside.py": "after pkg/ and all in it, in a tar's order\n",
    "src/pkg/new.py": "new, before pkg-beside.py\n",
}  # fmt: skip
# same-size.txt keeps its size and mtime but not its content: only its digest tells;
# pair-b is still pair-a's content and mtime, but its own inode now
KEEP_MTIME = {"src/same-size.txt", "src/pair-b"}
CHMOD_LATER = {"src/mode.sh": 0o755, "src/pkg/": 0o700}  # (a directory: only its mode)


def write_context(root: Path, files: Tree, dockerfile: str, ignore: str, *, second: bool) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / ".dockerignore").write_text(ignore)
    for name, content in sorted(files.items()):
        path = root / name.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        elif content.startswith("-> "):
            path.symlink_to(content[3:])
        elif content.startswith("=> "):
            os.link(root / content[3:], path)
        else:
            path.write_text(content)
        if second and name in CHMOD_LATER:
            path.chmod(CHMOD_LATER[name])  # the same content and mtime, another mode
    for directory, dirs, names in os.walk(root, topdown=False):
        for name in [*names, *dirs, ""]:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            changed = second and files.get(relative) != FIRST.get(relative)
            stamp = FILE_TIME + (100 if changed and relative not in KEEP_MTIME else 0)
            os.utime(path, (stamp, stamp), follow_symlinks=False)


def layers(tag: str) -> list[str]:
    return json.loads(invoke("inspect", tag).stdout)[0]["RootFS"]["Layers"]


VARIANTS = {
    "plain": ("COPY src/ /app/src/", "", ""),
    "chown-chmod": ("COPY --chown=1000:1000 --chmod=0750 src/ /app/src/", "", ""),
    "exclude": ("COPY --exclude=*.log src/ /app/src/", "", ""),
    "dockerignore-changes": ("COPY src/ /app/src/", "src/debug.log\n", "src/*.env\n"),
    "whole-context": ("COPY . /app/", "Dockerfile\n.dockerignore\n", "Dockerfile\n*.log\n"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_an_incremental_copy_makes_the_layer_a_full_copy_makes(
    variant: str, tmp_path: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy, first_ignore, second_ignore = VARIANTS[variant]
    dockerfile = f"FROM busybox:base\nRUN mkdir /app\n{copy}\n"
    build = ["build", "-q", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}", "-t", "inc:1"]
    ctx = tmp_path / "ctx"

    monkeypatch.setenv("KILN_ROOT", str(tmp_path / "incremental"))
    invoke("import", str(busybox_rootfs), "busybox:base")
    write_context(ctx, FIRST, dockerfile, first_ignore, second=False)
    invoke(*build, str(ctx))
    before = layers("inc:1")[-1]
    write_context(ctx, SECOND, dockerfile, second_ignore, second=True)
    invoke(*build, str(ctx))
    incremental = layers("inc:1")[-1]
    snapshots = tmp_path / "incremental" / "snapshots"
    if variant == "exclude":  # made whole, linking what it keeps from the last copy
        kept = (snapshots / before[7:] / "app/src/pkg/deep.py").stat()
        assert (snapshots / incremental[7:] / "app/src/pkg/deep.py").stat().st_ino == kept.st_ino
    else:  # made as a delta: only the changes, over the last copy's snapshot
        delta = snapshots / f"{incremental[7:]}.delta"
        assert (delta / "base").read_text() == before
        assert (delta / "tree/app/src/edit.py").read_text() == "new content\n"
        assert not (delta / "tree" / "app/src/pkg/deep.py").exists()

    monkeypatch.setenv("KILN_ROOT", str(tmp_path / "full"))
    invoke("import", str(busybox_rootfs), "busybox:base")
    invoke(*build, str(ctx))
    assert layers("inc:1")[-1] == incremental != before


def test_the_context_changed_after_a_build_never_changes_the_store(
    kiln_root: Path, tmp_path: Path
) -> None:
    """A copied file is never the context's inode: rewriting the context in place after two
    builds (the second incremental) leaves what later steps read as it was."""
    ctx = tmp_path / "ctx"
    dockerfile = "FROM busybox:base\nCOPY src/ /app/src/\n"
    write_context(ctx, FIRST, dockerfile, "", second=False)
    invoke("build", "-q", "-t", "ctx:1", str(ctx))
    (ctx / "src" / "edit.py").write_text("new content\n")  # the rest: the same inodes
    invoke("build", "-q", "-t", "ctx:2", str(ctx))
    for path in (ctx / "src").rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "r+") as same_inode:
                same_inode.write("MUTATED")
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "Dockerfile").write_text("FROM ctx:2\nRUN cat /app/src/keep.py /app/src/pkg/deep.py"
                                      " /app/src/edit.py > /seen\n")  # fmt: skip
    invoke("build", "-q", "-t", "probe:1", str(probe))
    snapshot = kiln_root / "snapshots" / layers("probe:1")[-1][7:]
    assert (snapshot / "seen").read_text() == "unchanged\ndeep\nnew content\n"


def test_a_spliced_layer_is_the_tar_gnu_tar_writes(tmp_path: Path) -> None:
    """The layer of a tree whose files are mostly the inodes of an earlier tree, taken from
    that tree's layer, is GNU tar's own output for the new tree, byte for byte: long and
    non-ASCII names (PAX headers), symlinks, a changed file, a new one, directories."""
    old, new = tmp_path / "old", tmp_path / "new"
    first, second = (
        {k: v for k, v in t.items() if not v.startswith("=> ")} for t in (FIRST, SECOND)
    )
    write_context(old, first, "", "", second=False)
    with open(tmp_path / "old.tar", "wb") as out:
        write_dir_layer(old, out)
    write_context(new, second, "", "", second=True)
    kept = set()
    for name, content in first.items():
        if second.get(name) == content and not name.endswith("/") and name not in CHMOD_LATER:
            (new / name).unlink()
            os.link(old / name, new / name, follow_symlinks=False)
            kept.add(name)
    assert len(kept) == 9
    (new / "src" / "extra.bin").write_bytes(bytes(5000))  # the archive ends past a record
    with open(tmp_path / "spliced.tar", "wb") as out:
        assert splice_dir_layer(new, out, tmp_path / "old.tar", kept) is not None
    with open(tmp_path / "written.tar", "wb") as out:
        write_dir_layer(new, out)
    assert (tmp_path / "spliced.tar").read_bytes() == (tmp_path / "written.tar").read_bytes()


def test_a_delta_mounts_as_the_layer_and_goes_with_its_base(
    kiln_root: Path, tmp_path: Path
) -> None:
    """A later step sees exactly the copy's files through a delta: changed, added, deleted
    and re-typed ones; another change makes another delta on the same base; and when the
    base goes (``kiln prune``), its deltas go too, the layers unpacked whole when next used."""
    ctx = tmp_path / "ctx"
    dockerfile = (
        "FROM busybox:base\nCOPY src/ /app/src/\n"
        "RUN cd /app/src && find . > /listing && cat edit.py > /seen"
        " && if [ -d to-dir ]; then cat to-dir/inside.py >> /seen; fi\n"
    )
    write_context(ctx, FIRST, dockerfile, "", second=False)
    invoke("build", "-q", "-t", "d:1", str(ctx))
    base = layers("d:1")[1]
    write_context(ctx, SECOND, dockerfile, "", second=True)
    invoke("build", "-q", "-t", "d:2", str(ctx))
    (ctx / "src" / "edit.py").write_text("third\n")
    invoke("build", "-q", "-t", "d:3", str(ctx))
    snapshots = kiln_root / "snapshots"
    second = {"."}  # what find lists of SECOND's src/: every path, and the directories above
    for name in SECOND:
        parts = name.removeprefix("src/").rstrip("/").split("/")
        second |= {"./" + "/".join(parts[:depth]) for depth in range(1, len(parts) + 1)}
    for tag, seen in (("d:2", "new content\ninside\n"), ("d:3", "third\ninside\n")):
        copied, ran = layers(tag)[1:3]
        assert (snapshots / f"{copied[7:]}.delta" / "base").read_text() == base
        assert set((snapshots / ran[7:] / "listing").read_text().split()) == second
        assert (snapshots / ran[7:] / "seen").read_text() == seen

    invoke("rmi", "d:1")
    invoke("prune")  # d:1's layer, the deltas' base, is unpacked no more: nor are they
    assert not list(snapshots.glob("*.delta"))
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "Dockerfile").write_text("FROM d:3\nRUN cat /app/src/edit.py /app/src/keep.py > /p\n")
    invoke("build", "-q", "-t", "probe:1", str(probe))
    assert (snapshots / layers("probe:1")[-1][7:] / "p").read_text() == "third\nunchanged\n"


def test_a_copy_over_files_of_the_layers_below_is_never_a_delta(
    kiln_root: Path, tmp_path: Path
) -> None:
    """A delta's whiteouts would hide what the layers below have in the copy's directory:
    a file deleted from the context shows the lower layer's file again, as a full copy does."""
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(
        "FROM busybox:base\nRUN mkdir -p /app/src && echo lower > /app/src/x.py\n"
        "COPY src/ /app/src/\nRUN cat /app/src/x.py > /seen\n"
    )
    (ctx / "src" / "x.py").write_text("context\n")
    (ctx / "src" / "y.py").write_text("y\n")
    invoke("build", "-q", "-t", "over:1", str(ctx))
    (ctx / "src" / "x.py").unlink()
    invoke("build", "-q", "-t", "over:2", str(ctx))
    snapshots = kiln_root / "snapshots"
    assert (snapshots / layers("over:1")[-1][7:] / "seen").read_text() == "context\n"
    assert (snapshots / layers("over:2")[-1][7:] / "seen").read_text() == "lower\n"
    assert not list(snapshots.glob("*.delta"))
