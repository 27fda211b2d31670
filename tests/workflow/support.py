"""What workflow tests share: a base image in a real registry, git repositories, skopeo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kiln.reference import Reference
from kiln.registry import RegistryClient, push_image
from kiln.store import Store
from kiln.store.transfer import import_rootfs
from tests.processes import program


def publish_busybox(busybox_rootfs: Path, registry_host: str, scratch: Path) -> str:
    """Push a busybox image to the registry (from a store of its own, so the store under
    test starts empty); the name it is published under."""
    name = f"{registry_host}/library/busybox:1"
    store = Store(scratch / "upstream-store")
    try:
        import_rootfs(store, busybox_rootfs, Reference.parse(name))
        with RegistryClient(registry_host) as client:
            push_image(store, name, Reference.parse(name), client)
    finally:
        store.close()
    return name


def git_repository(root: Path, files: dict[str, str]) -> str:
    """A git repository with ``files`` in one commit; its commit ID."""
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for command in (
        ["init", "-q", "-b", "main"], ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first"],
    ):  # fmt: skip
        subprocess.run(["git", "-C", str(root), *command], check=True, capture_output=True)
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def skopeo_inspect(reference: str, *flags: str) -> dict[str, object]:
    result = subprocess.run(
        [program("skopeo"), "inspect", "--tls-verify=false", *flags, f"docker://{reference}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    data: dict[str, object] = json.loads(result.stdout)
    return data
