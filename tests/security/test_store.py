"""The store against other users, killed builds, crashed hosts and poisoned caches."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.support import NEEDS_RUNC, context, invoke, unpack
from tests.processes import kiln_command, mounts_under, processes, wait_for_process
from tests.security.support import Item, kiln, tar_bytes

pytestmark = NEEDS_RUNC

SECRET = "tok-9d1c2b7e"


def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    """``command`` as another local user (no capabilities left, as for any such user)."""
    return subprocess.run(
        list(command), capture_output=True, text=True, user=65534, group=65534,
        extra_groups=[], cwd="/",
    )  # fmt: skip


def test_other_users_cannot_reach_the_store(kiln_root: Path, tmp_path: Path) -> None:
    """Item 8: the store was 0755, so any local user could run an image's setuid binary
    from its snapshot (as root) or open its 0666 device nodes."""
    ctx = context(
        tmp_path,
        "FROM busybox:base\nRUN cp /bin/busybox /bin/suid && chmod 4755 /bin/suid && "
        "mknod -m 666 /dev-null c 1 3\n",
    )
    invoke("build", "-q", "-t", "suid:1", str(ctx))
    assert stat.S_IMODE(kiln_root.stat().st_mode) == 0o700
    found = [p for p in (kiln_root / "snapshots").glob("*/bin/suid")]
    assert found and found[0].stat().st_mode & stat.S_ISUID  # root sees it...
    for path in (found[0], found[0].parent.parent / "dev-null"):
        denied = as_nobody("cat", str(path))  # ... another user reaches neither
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
    with pytest.raises(PermissionError):
        as_nobody(str(found[0]), "id", "-u")


def test_an_old_world_readable_store_becomes_private(tmp_path: Path) -> None:
    root = tmp_path / "old-store"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    status, output = kiln("images", env={"KILN_ROOT": str(root)})
    assert status == 0, output
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def _cgroups_of(pid: int) -> list[Path]:
    """The cgroup directories of process ``pid`` named after a kiln container."""
    found = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "kiln-" not in path:
            continue
        name = controllers.split(",")[0].removeprefix("name=") if controllers else ""
        for base in (Path("/sys/fs/cgroup") / (name or ""), Path("/sys/fs/cgroup") / controllers):
            if (base / path.lstrip("/")).is_dir():
                found.append(base / path.lstrip("/"))
    return found


def _on_tmpfs(path: Path) -> bool:
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return kind.stdout.strip() == "tmpfs"


def _holding(root: Path, text: str) -> list[str]:
    """Files below ``root`` whose content holds ``text``."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if text.encode() in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


@pytest.mark.parametrize("isolation", ["oci", "chroot"])
def test_a_killed_build_is_reclaimed_by_the_next_command(
    kiln_root: Path, tmp_path: Path, isolation: str
) -> None:
    """Item 12: ``kill -9`` of a build left the overlay mounted, the RUN process running,
    its cgroup, the bundle's config.json with an env= secret in clear text, and work
    directories no command ever reclaimed."""
    seconds = "6019" if isolation == "oci" else "6021"  # tests in parallel: one each
    ctx = context(
        tmp_path,
        f"FROM busybox:base\nRUN --mount=type=secret,id=tok,env=TOK sleep {seconds}\n",
    )
    build = subprocess.Popen(
        [kiln_command(), "build", "--isolation", isolation, "--secret", "id=tok,env=TOK",
         "-t", "killed:1", str(ctx)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "KILN_ROOT": str(kiln_root), "TOK": SECRET},
    )  # fmt: skip
    wait_for_process("sleep", seconds)
    [sleeper] = processes("sleep", seconds)
    cgroups = _cgroups_of(sleeper) if isolation == "oci" else []
    build.send_signal(signal.SIGKILL)
    build.wait()
    assert mounts_under(kiln_root)  # what the kill left, before the next command...
    assert processes("sleep", seconds)
    # The secret is in the build's private tmpfs, and nowhere on the disk.
    assert all(_on_tmpfs(Path(hit)) for hit in _holding(kiln_root, SECRET))

    invoke("images")  # ... which reclaims it all
    deadline = time.monotonic() + 10
    while processes("sleep", seconds) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes("sleep", seconds) == []
    assert mounts_under(kiln_root) == []
    assert [c for c in cgroups if c.exists()] == []
    assert os.listdir(kiln_root / "work") == []
    assert all(
        len(p.name) == 64 or p.name == ".boot-id" for p in (kiln_root / "snapshots").iterdir()
    )


def test_a_failed_run_leaves_no_work_directory(kiln_root: Path, tmp_path: Path) -> None:
    """Item 12: every failed RUN leaked an ``ovl-*`` directory."""
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo x > /x && exit 3\n")
    status, _ = kiln("build", "-q", str(ctx))
    assert status == 1
    assert os.listdir(kiln_root / "work") == []
    assert all(
        len(p.name) == 64 or p.name == ".boot-id" for p in (kiln_root / "snapshots").iterdir()
    )


def test_snapshots_of_another_boot_are_unpacked_again(kiln_root: Path, tmp_path: Path) -> None:
    """Item 15: after a host crash, half-written snapshots (a volatile overlay, renames
    never synced) were used as they were. A snapshot counts only in the boot that wrote
    it; after that its layer is unpacked again from its blob, which is synced."""
    ctx = context(tmp_path, "FROM busybox:base\nRUN echo whole > /data\n")
    invoke("build", "-q", "-t", "crash:1", str(ctx))
    [written] = list((kiln_root / "snapshots").glob("*/data"))
    written.write_text("half")  # what a crash may leave of it
    assert invoke("run", "--rm", "crash:1", "cat", "/data").stdout == "half"  # same boot
    (kiln_root / "snapshots" / ".boot-id").write_text("an-earlier-boot")
    assert invoke("run", "--rm", "crash:1", "cat", "/data").stdout == "whole\n"


def test_cache_from_serves_only_the_build_that_asked(kiln_root: Path, tmp_path: Path) -> None:
    """Item 14: an image's inline cache went into the store-wide cache, so one build with
    ``--cache-from evil`` changed what later builds without it produced."""
    dockerfile = "FROM busybox:base\nRUN echo good > /f\nRUN cat /f > /g\n"
    ctx = context(tmp_path, dockerfile)
    invoke("build", "-q", "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", "honest:1", str(ctx))
    evil = _forged(kiln_root, tmp_path, "honest:1")
    invoke("prune")  # nothing of the honest build left in the cache
    invoke("rmi", "honest:1")
    invoke("load", "-i", str(evil))

    asked = invoke("build", "--cache-from", "evil:1", "-t", "asked:one", str(ctx)).stderr
    assert "cache from evil:1" in asked
    rootfs = unpack(kiln_root, "one", tmp_path / "asked")
    assert (rootfs / "f").read_text() == "evil\n"  # what --cache-from means

    invoke("build", "-q", "-t", "later:two", str(ctx))  # no --cache-from
    rootfs = unpack(kiln_root, "two", tmp_path / "later")
    assert (rootfs / "f").read_text() == "good\n"
    assert (rootfs / "g").read_text() == "good\n"  # nor a step built on evil's layer


def _forged(kiln_root: Path, tmp_path: Path, name: str) -> Path:
    """``name`` with its first RUN's layer swapped for one of the attacker's, its inline
    cache kept: an image claiming that the honest step made the evil layer."""
    image = json.loads(invoke("inspect", name).stdout)[0]
    blobs = kiln_root / "blobs" / "sha256"
    manifest = json.loads((blobs / image["Manifest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    layers = [(blobs / layer["digest"][7:]).read_bytes() for layer in manifest["layers"]]
    layers[1] = tar_bytes([Item("f", data=b"evil\n")])
    config["rootfs"]["diff_ids"] = ["sha256:" + hashlib.sha256(d).hexdigest() for d in layers]
    config_bytes = json.dumps(config).encode()
    items = [Item("config.json", data=config_bytes)]
    items += [Item(f"l{n}.tar", data=data) for n, data in enumerate(layers)]
    entry = {"Config": "config.json", "RepoTags": ["evil:1"],
             "Layers": [f"l{n}.tar" for n in range(len(layers))]}  # fmt: skip
    items.append(Item("manifest.json", data=json.dumps([entry]).encode()))
    path = tmp_path / "evil.tar"
    path.write_bytes(tar_bytes(items))
    return path
