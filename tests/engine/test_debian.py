"""kiln build on a real distribution: Debian bookworm minbase made with debootstrap."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("runc") is None or os.geteuid() != 0, reason="building needs root and runc"
    ),
]

DOCKERFILE = """\
FROM debian:bookworm
RUN useradd --create-home --uid 1000 app && dpkg-query -W -f '${Version}' dpkg > /dpkg-version
COPY --chown=app:app hello.sh /home/app/hello.sh
USER app
WORKDIR /home/app
RUN ./hello.sh > out.txt
CMD ["cat", "/home/app/out.txt"]
"""


def kiln(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr or result.output
    return result.stdout


def test_build_on_debian_with_users_and_chown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, debian_rootfs_tar: Path
) -> None:
    monkeypatch.setenv("KILN_ROOT", str(tmp_path / "kiln-root"))
    kiln("import", str(debian_rootfs_tar), "debian:bookworm")
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    script = context / "hello.sh"
    script.write_text('#!/bin/sh\necho "hello from $(whoami) on $(. /etc/os-release; echo $ID)"\n')
    script.chmod(0o755)
    kiln("build", "-q", "-t", "debian-app:1", str(context))
    assert kiln("run", "--rm", "debian-app:1") == "hello from app on debian\n"
    listing = kiln("run", "debian-app:1", "stat", "-c", "%u:%g %a", "/home/app/hello.sh")
    assert listing == "1000:1000 755\n"
    version = kiln("run", "debian-app:1", "cat", "/dpkg-version")
    assert version.startswith("1.21")  # bookworm's dpkg
