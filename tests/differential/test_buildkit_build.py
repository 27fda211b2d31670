"""kiln build against BuildKit: the same Dockerfile, the same final filesystem and config.

Both build FROM the same busybox image (made with ``kiln import``, loaded into the private
dockerd with ``docker load``). kiln's image is unpacked by umoci; BuildKit's is exported by
``docker export``. Every path is compared by type, mode, owner, size, content and link
target (mtimes differ by nature); the config by env, user, working dir, command, labels.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from tests.engines import DockerEngine
from tests.processes import program

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed"),
]

# Paths a container runtime adds to an exported container, not part of the image.
RUNTIME_PATHS = (
    "dev", "proc", "sys", ".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf",
    "etc/mtab",
)  # fmt: skip

Entry = tuple[str, int, int, int, int, str]


def _tar_bytes(files: dict[str, bytes], *, gz: bool = False) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o640, 1000, 1000, 1
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0) if gz else raw.getvalue()


CASES: dict[str, dict[str, Any]] = {
    "env-arg-workdir-user": {
        "dockerfile": "FROM busybox:base\nARG A=one\nENV B=$A-two C=\"${A:-x} y\"\n"
        "WORKDIR /w/$B\nRUN echo \"$A $B $C\" > args.txt\nUSER nobody\n"
        "RUN id > /tmp/id.txt\nUSER 0\nWORKDIR rel/dir\nRUN pwd > /pwd.txt\n",
        "args": {"A": "cli"},
    },
    "copy-chown-chmod-dockerignore": {
        "dockerfile": "FROM busybox:base\nCOPY --chown=nobody:nogroup src/ /src/\n"
        "COPY --chmod=0600 top.txt /etc/top.txt\nCOPY *.md /docs/\n",
        "files": {"src/a.py": "a", "src/sub/b.py": "b", "src/sub/.env": "secret",
                  "src/keep.env": "keep", "top.txt": "top", "README.md": "r", "NOTES.md": "n"},
        "ignore": "**/*.env\n!src/keep.env\n",
    },
    "symlinks-and-empty-dirs": {
        "dockerfile": "FROM busybox:base\nCOPY . /ctx/\n",
        "files": {"real/file.txt": "data"},
        "links": {"link-to-file": "real/file.txt", "real/dangling": "../nowhere"},
        "empty_dirs": ["empty", "real/empty-inside"],
    },
    "symlinks-named-as-sources": {
        "dockerfile": "FROM busybox:base\nCOPY link-to-file /f\nCOPY link-to-dir /d/\n"
        "COPY link-to-dir/inner.txt /i\nCOPY link-* /g/\n",
        "files": {"real/inner.txt": "inner"},
        "links": {"link-to-file": "real/inner.txt", "link-to-dir": "real"},
    },
    "directory-copies-into-new-deleted-and-existing-dirs": {
        "dockerfile": "FROM busybox:base\nRUN mkdir -p /gone/x /kept && echo o > /gone/x/o"
        " && echo k > /kept/k\nRUN rm -rf /gone\nCOPY src/ /gone/\nCOPY src/ /kept/\n"
        "COPY src /deep/new/dir\nCOPY src/ /bin/src/\n",
        "files": {"src/a.txt": "a", "src/x/b.txt": "b", "src/x/y/c.txt": "c"},
        "links": {"src/x/link": "b.txt"},
        "empty_dirs": ["src/empty"],
    },
    "destinations-through-symlinks": {
        "dockerfile": "FROM busybox:base\nRUN mkdir -p /target/old && ln -s /target /abs"
        " && ln -s target /rel\nCOPY f.txt /abs/sub/\nCOPY tree/ /rel/\nWORKDIR /abs/w\n"
        "RUN pwd > /pwd.txt\n",
        "files": {"f.txt": "f", "tree/old/t.txt": "t"},
    },
    "whiteouts-and-opaque-dirs": {
        "dockerfile": "FROM busybox:base\nRUN mkdir -p /data/sub && echo old > /data/sub/old\n"
        "RUN rm /bin/vi /etc/group && rm -rf /data && mkdir /data && echo new > /data/new\n",
    },
    "add-archives": {
        "dockerfile": "FROM busybox:base\nADD plain.tar /plain/\nADD packed.tar.gz /packed\n"
        "ADD --chown=nobody plain.tar /owned/\n",
        "binary": {
            "plain.tar": _tar_bytes({"a/one.txt": b"1", "two.txt": b"2"}),
            "packed.tar.gz": _tar_bytes({"x/y.txt": b"zz"}, gz=True),
        },
    },
    "multi-stage-target-skips-unused-failing-stage": {
        "dockerfile": "FROM busybox:base AS broken\nRUN exit 1\n"
        "FROM busybox:base AS build\nRUN echo built > /artifact\n"
        "FROM busybox:base AS final\nCOPY --from=build /artifact /artifact\n"
        "FROM broken AS never\n",
        "target": "final",
    },
    "onbuild": {
        "dockerfile": "FROM busybox:base AS base\nONBUILD RUN echo triggered > /onbuild.txt\n"
        "FROM base\nRUN cat /onbuild.txt > /seen.txt\n",
    },
    "runs-that-change-nothing": {
        "dockerfile": "FROM busybox:base\nRUN echo one\nRUN echo two\nRUN true\n",
    },
    "shell": {
        "dockerfile": 'FROM busybox:base\nSHELL ["/bin/sh", "-ec"]\nRUN echo $0 > /shell.txt\n'
        'CMD echo hello\nENTRYPOINT ["/bin/sh", "-c"]\n',
    },
}  # fmt: skip


def _context(tmp_path: Path, name: str, case: dict[str, Any]) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "Dockerfile").write_text(case["dockerfile"])
    for path, content in case.get("files", {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    for path, data in case.get("binary", {}).items():
        (root / path).write_bytes(data)
    for path, target in case.get("links", {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path)
    for path in case.get("empty_dirs", []):
        (root / path).mkdir(parents=True)
    if "ignore" in case:
        (root / ".dockerignore").write_text(case["ignore"])
    return root


def _keep(path: str) -> bool:
    return not any(path == p or path.startswith(p + "/") for p in RUNTIME_PATHS)


def _from_tar(data: bytes) -> set[Entry]:
    entries = set()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            path = member.name.strip("/").removeprefix("./")
            if not path or not _keep(path):
                continue
            content = ""
            if member.isfile() or member.islnk():  # a hard link: the file it links to
                extracted = tar.extractfile(member)
                content = hashlib.sha256(extracted.read() if extracted else b"").hexdigest()
            elif member.issym():
                content = "-> " + member.linkname
            kind = {tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l"}.get(member.type, "f")
            entries.add((path, ord(kind), member.mode & 0o7777, member.uid, member.gid, content))
    return entries


def _from_dir(root: Path) -> set[Entry]:
    entries = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(directory) / name
            path = full.relative_to(root).as_posix()
            if not _keep(path):
                continue
            st = os.lstat(full)
            content = ""
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(full.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = "-> " + os.readlink(full)
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            entries.add((path, ord(kind), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content))
    return entries


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path, docker_engine: DockerEngine
) -> tuple[Path, DockerEngine]:
    root = tmp_path_factory.mktemp("kiln-root")
    os.environ["KILN_ROOT"] = str(root)
    _kiln("import", str(busybox_rootfs), "busybox:base")
    archive = root.parent / "busybox.tar"
    _kiln("save", "-o", str(archive), "busybox:base")
    docker_engine.run("load", "-i", str(archive))
    return root, docker_engine


def _kiln(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return result.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_image_as_buildkit(
    engines: tuple[Path, DockerEngine], tmp_path: Path, name: str
) -> None:
    kiln_root, docker = engines
    os.environ["KILN_ROOT"] = str(kiln_root)
    case = CASES[name]
    context = _context(tmp_path, name, case)
    options = [f"--build-arg={k}={v}" for k, v in case.get("args", {}).items()]
    if case.get("target"):
        options.append(f"--target={case['target']}")
    tag = f"diff-{name}:1"

    docker.run(
        "build", "-q", "--network=host", "-t", tag, *options, str(context),
        env={"DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    container = docker.run("create", tag, "/bin/true").strip()
    theirs_fs = _from_tar(docker.run_bytes("export", container))
    docker.run("rm", container)
    theirs = json.loads(docker.run("image", "inspect", tag))[0]["Config"]

    _kiln("build", "-q", "-t", tag, *options, str(context))
    ours_fs = _unpack(kiln_root, tag, tmp_path / "bundle")
    ours = json.loads(_kiln("inspect", tag))[0]["Config"]

    assert sorted(ours_fs - theirs_fs) == sorted(theirs_fs - ours_fs) == []
    for key in ("Env", "User", "WorkingDir", "Cmd", "Entrypoint", "Labels", "Shell", "OnBuild"):
        assert (key, ours.get(key) or None) == (key, theirs.get(key) or None)
    image_id = json.loads(_kiln("inspect", tag))[0]["Id"]
    our_config = json.loads((kiln_root / "blobs" / "sha256" / image_id[7:]).read_text())
    assert _history(our_config) == _history(_docker_config(docker, tag))


def _docker_config(docker: DockerEngine, tag: str) -> Any:
    """The image config as BuildKit wrote it (docker inspect leaves out the history)."""
    with tarfile.open(fileobj=io.BytesIO(docker.run_bytes("save", tag))) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]


def _history(config: dict[str, Any]) -> list[tuple[str, bool]]:
    """(created_by, empty_layer) of each entry. Current BuildKit writes COPY/ADD's --chown
    and --chmod into created_by, Debian's BuildKit 0.8 does not: those words are dropped.
    Its HEALTHCHECK text predates StartInterval (BuildKit 0.12), which kiln writes as
    current BuildKit does: that field is dropped too."""
    return [
        (
            _START_INTERVAL.sub(r"\1", " ".join(
                w for w in h.get("created_by", "").split(" ")
                if not w.startswith(("--chown=", "--chmod="))
            )),
            bool(h.get("empty_layer")),
        )
        for h in config["history"]
    ]  # fmt: skip


# HEALTHCHECK &{[test] "interval" "timeout" "start period" "start interval" 'retries'}
_START_INTERVAL = re.compile(r'^(HEALTHCHECK &\{\[.*\](?: "[^"]*"){3}) "[^"]*"(?= \'.*\'\}$)')


def _unpack(kiln_root: Path, tag: str, bundle: Path) -> set[Entry]:
    """kiln's image through umoci, which needs a layout tag: give it one."""
    layout = bundle.parent / "layout.tar"
    _kiln("save", "-o", str(layout), tag)
    oci = bundle.parent / "oci"
    oci.mkdir()
    with tarfile.open(layout) as tar:
        tar.extractall(oci, filter="data")
    index = json.loads((oci / "index.json").read_text())
    reference = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    subprocess.run(
        [program("umoci"), "unpack", "--image", f"{oci}:{reference}", str(bundle)],
        check=True,
        capture_output=True,
    )
    return _from_dir(bundle / "rootfs")
