"""A git repository served by ``git daemon`` on a free loopback port, and a clone that
pushes to it: what ADD from git and the attack tests fetch from."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class GitServer:
    port: int
    work: Path  # a clone that pushes to the served repository

    def url(self, fragment: str = "") -> str:
        return f"git://127.0.0.1:{self.port}/repo.git" + (f"#{fragment}" if fragment else "")

    def commit(self, files: dict[str, str], message: str) -> None:
        for name, content in files.items():
            (self.work / name).parent.mkdir(parents=True, exist_ok=True)
            (self.work / name).write_text(content)
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "-m", message)
        git(self.work, "push", "--quiet", "--tags", "origin", "main")


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    """A repository served by ``git daemon`` on a free loopback port."""
    base = tmp_path / "served"
    base.mkdir()
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(base / "repo.git")],
                   check=True)  # fmt: skip
    work = tmp_path / "work"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(work)], check=True)
    git(work, "remote", "add", "origin", str(base / "repo.git"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", f"--base-path={base}", f"--port={port}",
         "--reuseaddr", "--listen=127.0.0.1", str(base)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert daemon.poll() is None and time.monotonic() < deadline, "no git daemon"
            time.sleep(0.05)
        yield GitServer(port, work)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
