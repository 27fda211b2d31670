"""Layer control on real builds: ``--squash``, incubator's ``layers``, makisu's ``#!COMMIT``.

Each regroups the final stage's layers after the build; the image must unpack (with umoci,
which applies whiteouts and opaque directories itself) to exactly the filesystem the
unsquashed build gives, and every step must still come from the cache on a rebuild.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kiln.api import BuildError, Client
from kiln.api.incubator import build as incubator_build
from kiln.store import Store
from tests.engine.support import NEEDS_RUNC, context, invoke, unpack

pytestmark = NEEDS_RUNC

# Instructions 0 to 8, in incubator's numbering. Step 4 deletes a base file and directory
# and a file step 1 made; step 7 replaces a directory step 2 copied and makes a hard link.
DOCKERFILE = """\
FROM busybox:base
RUN mkdir -p /data && echo one > /data/one && echo two > /data/two && ln -s one /data/link
COPY app/ /app/{copy_mark}
ENV MODE=test
RUN rm /data/two /etc/group && rm -r /var/tmp && chmod 600 /data/one{run_mark}
WORKDIR /work
COPY extra.txt /app/extra.txt
RUN rm -r /app/sub && mkdir /app/sub && echo new >/app/sub/new && ln /data/one /data/hard{last_mark}
CMD ["sh"]
"""
FILES = {"app/main.txt": "main\n", "app/sub/old.txt": "old\n", "extra.txt": "extra\n"}
OWN_LAYERS = 6  # RUN, COPY, RUN, WORKDIR, COPY, RUN: one each without layer control
MARK = " #!COMMIT"


def dockerfile(copy_mark: str = "", run_mark: str = "", last_mark: str = "") -> str:
    return DOCKERFILE.format(copy_mark=copy_mark, run_mark=run_mark, last_mark=last_mark)


def layers(tag: str) -> int:
    """The image's layer count, checked against its history: one entry per layer."""
    image = json.loads(invoke("inspect", tag).stdout)[0]
    history = Store(Path(os.environ["KILN_ROOT"])).image(tag).config["history"]
    assert len(image["RootFS"]["Layers"]) == sum(not e.get("empty_layer") for e in history)
    return len(image["RootFS"]["Layers"])


def tree(rootfs: Path) -> dict[str, tuple[object, ...]]:
    """Every path with its type, mode, owner, and content, link target or link count."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(rootfs):
        for name in (*dirs, *files):
            path = Path(directory, name)
            st = os.lstat(path)
            detail: object = None
            if stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = (path.read_bytes(), st.st_nlink)
            found[path.relative_to(rootfs).as_posix()] = (
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, detail
            )  # fmt: skip
    return found


@pytest.fixture
def plain(kiln_root: Path, tmp_path: Path) -> dict[str, tuple[object, ...]]:
    """The build without layer control (tagged app:plain), unpacked."""
    invoke("build", "-t", "app:plain", str(context(tmp_path, dockerfile(), FILES)))
    assert layers("app:plain") == 1 + OWN_LAYERS
    files = tree(unpack(kiln_root, "plain", tmp_path))
    # What the steps did, so that an equal tree means something.
    assert "etc/group" not in files and "var/tmp" not in files and "data/two" not in files
    assert "app/sub/old.txt" not in files and files["app/sub/new"][4] == (b"new\n", 1)
    assert files["data/hard"] == files["data/one"] and files["data/one"][4] == (b"one\n", 2)
    assert files["data/one"][1] == 0o600 and files["data/link"][4] == "one"
    return files


def test_squash_makes_one_layer_over_the_base_from_the_cached_steps(
    kiln_root: Path, tmp_path: Path, plain: dict[str, tuple[object, ...]]
) -> None:
    result = invoke(
        "build", "--squash", "--progress", "plain", "-t", "app:squashed",
        str(context(tmp_path, dockerfile(), FILES)),
    )  # fmt: skip
    assert result.output.count(" CACHED") == OWN_LAYERS  # no step ran again
    assert layers("app:squashed") == 2
    assert tree(unpack(kiln_root, "squashed", tmp_path)) == plain
    image = json.loads(invoke("inspect", "app:squashed").stdout)[0]
    assert image["Config"]["Cmd"] == ["sh"] and "MODE=test" in image["Config"]["Env"]


def test_squash_from_scratch_is_a_single_layer(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\nCOPY a /a\nCOPY b /b\n", {"a": "A", "b": "B"})
    invoke("build", "--squash", "-t", "app:scratch", str(ctx))
    assert layers("app:scratch") == 1
    rootfs = unpack(kiln_root, "scratch", tmp_path)
    assert (rootfs / "a").read_text() == "A" and (rootfs / "b").read_text() == "B"


def test_docker_py_squash(
    kiln_root: Path, tmp_path: Path, plain: dict[str, tuple[object, ...]]
) -> None:
    with Client(root=kiln_root) as client:
        image, _ = client.images.build(
            path=str(context(tmp_path, dockerfile(), FILES)), squash=True, tag="app:dockerpy"
        )
    assert len(image.attrs["RootFS"]["Layers"]) == 2
    assert tree(unpack(kiln_root, "dockerpy", tmp_path)) == plain


@pytest.mark.parametrize(
    ("splits", "count"),
    [
        ([0], 2),  # one layer over the base
        ([3, 6], 4),  # instructions 1-2, 3-5 and 6-8
        ([3, 4], 3),  # 3 alone (ENV) changes no files: no layer of its own
        ([6, 3, 3], 4),  # incubator's marks, in any order
        ([5, 6], 3),  # 5 alone (WORKDIR) is no data change either: it joins 6-8
    ],
)
def test_incubator_layers(
    kiln_root: Path,
    tmp_path: Path,
    plain: dict[str, tuple[object, ...]],
    splits: list[int],
    count: int,
) -> None:
    with Client(root=kiln_root) as client:
        image = incubator_build(
            path=str(context(tmp_path, dockerfile(), FILES)), tag="app:incubated",
            layers=splits, container_client=client,
        )  # fmt: skip
    assert len(image.attrs["RootFS"]["Layers"]) == count
    assert layers("app:incubated") == count
    assert tree(unpack(kiln_root, "incubated", tmp_path)) == plain


def test_incubator_layers_past_the_last_instruction_are_refused(
    kiln_root: Path, tmp_path: Path
) -> None:
    with Client(root=kiln_root) as client, pytest.raises(BuildError, match=r"layers \[10\]"):
        incubator_build(
            path=str(context(tmp_path, dockerfile(), FILES)), layers=[10], container_client=client
        )


@pytest.mark.parametrize(
    ("marks", "count"),
    [
        ({"copy_mark": MARK, "last_mark": MARK}, 3),  # 1-2 and 4-7
        ({"run_mark": MARK}, 3),  # 1-4, and the rest: the last step always ends a layer
        ({}, 2),  # no mark: one layer over the base
    ],
)
def test_commit_explicit(
    kiln_root: Path,
    tmp_path: Path,
    plain: dict[str, tuple[object, ...]],
    marks: dict[str, str],
    count: int,
) -> None:
    ctx = context(tmp_path, dockerfile(**marks), FILES)
    invoke("build", "--commit", "explicit", "-t", "app:explicit", str(ctx))
    assert layers("app:explicit") == count
    assert tree(unpack(kiln_root, "explicit", tmp_path)) == plain


def test_squash_keeps_the_layers_of_a_base_stage(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base AS builder\nRUN echo built > /built\n"
        "FROM builder\nRUN echo one > /one\nRUN echo two > /two\n",
    )
    invoke("build", "--squash", "-t", "app:staged", str(ctx))
    assert layers("app:staged") == 3  # busybox's, the builder stage's, and the merged one
    rootfs = unpack(kiln_root, "staged", tmp_path)
    assert [(rootfs / name).read_text() for name in ("built", "one", "two")] == [
        "built\n", "one\n", "two\n"
    ]  # fmt: skip
