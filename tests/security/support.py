"""What the attack tests share: crafted layers and image archives, a host victim to watch,
and kiln run as a user runs it (its own process, one line on error)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.processes import kiln_command


@dataclass(frozen=True)
class Item:
    """One tar entry of a crafted layer or archive."""

    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, fifo
    data: bytes = b""
    mode: int = 0o644
    link: str = ""
    uid: int = 0
    pax: dict[str, str] | None = None


def tar_bytes(items: list[Item]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in items:
            info = tarfile.TarInfo(item.name)
            info.mode, info.uid, info.mtime = item.mode, item.uid, 1_700_000_000
            if item.pax:
                info.pax_headers = dict(item.pax)
            if item.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif item.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, item.link
            elif item.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, item.link
            elif item.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size = len(item.data)
            tar.addfile(info, io.BytesIO(item.data) if item.kind == "file" else None)
    return buffer.getvalue()


def image_archive(path: Path, tag: str, layers: list[bytes], config: dict | None = None) -> Path:
    """A docker-archive (what ``docker save`` writes) of an image with these layer tars."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    image_config = {
        "architecture": "amd64", "os": "linux",
        "config": config or {"Cmd": ["/bin/true"], "Env": ["PATH=/bin:/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }  # fmt: skip
    config_bytes = json.dumps(image_config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    entries = [Item(config_name, data=config_bytes)]
    names = []
    for diff_id, layer in zip(diff_ids, layers, strict=True):
        names.append(f"{diff_id[7:]}/layer.tar")
        entries += [Item(f"{diff_id[7:]}", "dir", mode=0o755), Item(names[-1], data=layer)]
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
    entries.append(Item("manifest.json", data=json.dumps(manifest).encode()))
    path.write_bytes(tar_bytes(entries))
    return path


def kiln(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str]:
    """``kiln ARGS`` as its own process: (exit status, what it printed: stdout, then
    stderr)."""
    result = subprocess.run(
        [kiln_command(), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line kiln printed, with no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def tree_state(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every path below ``root`` (and root) with its mode, owner, mtime and content."""
    state = {}
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        state[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_mtime_ns, data)
    return state
