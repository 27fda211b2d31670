"""Real collaborators the tests drive: a private Docker engine."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

DOCKER_CLIENT = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker lacks BuildKit here


@dataclass(frozen=True)
class DockerEngine:
    """A private dockerd: its socket, and a way to run the Debian docker client against it."""

    host: str

    def ready(self) -> bool:
        probe = [DOCKER_CLIENT, "-H", self.host, "version", "--format", "{{.Server.Version}}"]
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0

    def run_bytes(self, *args: str) -> bytes:
        result = subprocess.run(
            [DOCKER_CLIENT, "-H", self.host, *args], capture_output=True, timeout=300
        )
        if result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [DOCKER_CLIENT, "-H", self.host, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout
