"""Debian's docker-registry (the CNCF distribution registry), run on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REGISTRY = "docker-registry"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT, as image references name it
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(base: Path, *, htpasswd: Path | None = None) -> Registry:
    """A plain-HTTP registry storing under ``base``, with Basic auth if ``htpasswd``."""
    if shutil.which(REGISTRY) is None:
        pytest.skip("Debian's docker-registry is not installed (.ci/run installs it)")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = f"auth:\n  htpasswd:\n    realm: kiln-tests\n    path: {htpasswd}\n" if htpasswd else ""
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = base / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=out, stderr=out)
    registry = Registry(f"127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://{registry.host}/v2/", timeout=1).status_code in (200, 401):
                return registry
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            registry.stop()
            pytest.fail(f"docker-registry did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    import bcrypt

    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}"
        for user, pw in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
