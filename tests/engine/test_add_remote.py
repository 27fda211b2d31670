"""ADD from http(s) URLs and git repositories, against a real HTTP server and a real
git daemon on loopback; images checked with umoci."""

from __future__ import annotations

import email.utils
import hashlib
import io
import os
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kiln.cli.main import cli
from tests.engine.support import NEEDS_RUNC, context, invoke, unpack
from tests.gitserver import GitServer, git

pytestmark = NEEDS_RUNC


LAST_MODIFIED = 1_600_000_000  # 2020-09-13


@dataclass
class FileServer:
    """Serves ``files`` (path → content) with ETags and Last-Modified, answering
    conditional requests, and logs (method, path, status) of every request."""

    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def statuses(self, path: str) -> list[int]:
        return [status for _, logged, status in self.log if logged == path]


@pytest.fixture
def server() -> Iterator[FileServer]:
    served = FileServer(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = self.answer()
            served.log.append(("GET", self.path, status))

        def answer(self) -> int:
            if self.path in served.redirects:
                self.send_response(302)
                self.send_header("Location", served.redirects[self.path])
                self.end_headers()
                return 302
            content = served.files.get(self.path)
            if content is None:
                self.send_error(404)
                return 404
            etag = '"' + hashlib.sha256(content).hexdigest()[:16] + '"'
            modified = email.utils.formatdate(LAST_MODIFIED, usegmt=True)
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return 304
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            return 200

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def build(ctx: Path, tag: str) -> Result:
    return CliRunner().invoke(cli, ["build", "-t", f"app:{tag}", str(ctx)])


def built(ctx: Path, tag: str) -> str:
    """The log of a build that must succeed."""
    result = build(ctx, tag)
    assert result.exit_code == 0, result.stderr or result.output
    return result.stderr


def test_add_url_files(kiln_root: Path, tmp_path: Path, server: FileServer) -> None:
    server.files["/files/app.txt"] = b"hello from the web\n"
    server.files["/files/tool.sh"] = b"#!/bin/sh\necho tool\n"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("inside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    server.files["/files/bundle.tar.gz"] = archive.getvalue()
    server.redirects["/latest"] = "/files/app.txt"
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        f"ADD {server.url('/files/app.txt')} /opt/\n"
        f"ADD --chmod=755 {server.url('/files/tool.sh')} /usr/local/bin/tool\n"
        f"ADD {server.url('/files/bundle.tar.gz')} {server.url('/latest')} /downloads/\n",
    )
    built(ctx, "url")
    rootfs = unpack(kiln_root, "url", tmp_path)
    app = rootfs / "opt" / "app.txt"
    assert app.read_bytes() == b"hello from the web\n"
    assert oct(app.stat().st_mode & 0o7777) == "0o600"  # BuildKit's mode for a download
    assert app.stat().st_mtime == LAST_MODIFIED
    tool = rootfs / "usr" / "local" / "bin" / "tool"
    assert oct(tool.stat().st_mode & 0o7777) == "0o755"
    # A downloaded archive is not unpacked; a redirect is followed, the name is the URL's.
    assert (rootfs / "downloads" / "bundle.tar.gz").read_bytes() == archive.getvalue()
    assert (rootfs / "downloads" / "latest").read_bytes() == b"hello from the web\n"
    assert not (rootfs / "downloads" / "inside.txt").exists()


def test_rebuilds_revalidate_with_a_conditional_request(
    kiln_root: Path, tmp_path: Path, server: FileServer
) -> None:
    server.files["/app.txt"] = b"one\n"
    ctx = context(tmp_path, f"FROM busybox:base\nADD {server.url('/app.txt')} /app.txt\n")
    assert "CACHED" not in built(ctx, "v1")
    assert server.statuses("/app.txt") == [200]
    assert "CACHED" in built(ctx, "v1")
    assert server.statuses("/app.txt") == [200, 304]  # asked, not downloaded again

    server.files["/app.txt"] = b"two\n"
    assert "CACHED" not in built(ctx, "v2")
    assert server.statuses("/app.txt") == [200, 304, 200]
    assert (unpack(kiln_root, "v2", tmp_path) / "app.txt").read_text() == "two\n"
    assert (unpack(kiln_root, "v1", tmp_path) / "app.txt").read_text() == "one\n"


def test_checksum_pins_the_content(kiln_root: Path, tmp_path: Path, server: FileServer) -> None:
    content = b"pinned\n"
    server.files["/pinned.txt"] = content
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    ctx = context(
        tmp_path, f"FROM busybox:base\nADD --checksum={digest} {server.url('/pinned.txt')} /\n"
    )
    built(ctx, "pinned")
    assert (unpack(kiln_root, "pinned", tmp_path) / "pinned.txt").read_bytes() == content
    requests = len(server.log)
    assert "CACHED" in built(ctx, "pinned")
    assert len(server.log) == requests  # the checksum is the cache key: nothing asked

    wrong = "sha256:" + "0" * 64
    (ctx / "Dockerfile").write_text(
        f"FROM busybox:base\nRUN echo first\nADD --checksum={wrong} {server.url('/pinned.txt')} /\n"
    )
    result = build(ctx, "wrong")
    assert result.exit_code == 1
    assert f"{ctx}/Dockerfile:3: checksum mismatch for {server.url('/pinned.txt')}: " in (
        result.stderr
    )
    assert f"expected {wrong}, got {digest}" in result.stderr
    assert "app:wrong" not in invoke("images").stdout


def test_fetch_errors_name_the_line_and_the_url(
    kiln_root: Path, tmp_path: Path, server: FileServer
) -> None:
    missing = server.url("/missing.txt")
    ctx = context(tmp_path, f"FROM busybox:base\nADD {missing} /\n")
    result = build(ctx, "missing")
    assert result.exit_code == 1
    assert f"{ctx}/Dockerfile:2: cannot fetch {missing}: HTTP 404" in result.stderr

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/file"
    (ctx / "Dockerfile").write_text(f"FROM busybox:base\n\nADD {closed} /\n")
    result = build(ctx, "closed")
    assert result.exit_code == 1
    assert f"{ctx}/Dockerfile:3: cannot fetch {closed}: " in result.stderr
    assert "Traceback" not in result.stderr


# -- git --------------------------------------------------------------------------------------


def test_add_a_git_subdirectory_at_a_tag(
    kiln_root: Path, tmp_path: Path, git_server: GitServer
) -> None:
    git_server.commit({"top.txt": "top\n", "sub/hello.txt": "hello v1\n"}, "first")
    git(git_server.work, "tag", "v1")
    git_server.commit({"sub/hello.txt": "hello v2\n"}, "second")  # the tag stays on v1
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        f"ADD {git_server.url('v1:sub')} /dst/\n"
        f"ADD --keep-git-dir {git_server.url('main')} /src\n",
    )
    built(ctx, "git")
    rootfs = unpack(kiln_root, "git", tmp_path)
    assert sorted(os.listdir(rootfs / "dst")) == ["hello.txt"]  # no .git, no top.txt
    assert (rootfs / "dst" / "hello.txt").read_text() == "hello v1\n"
    assert (rootfs / "src" / "sub" / "hello.txt").read_text() == "hello v2\n"
    head = (rootfs / "src" / ".git" / "HEAD").read_text().strip()
    assert head == git(git_server.work, "rev-parse", "main").strip()  # a detached checkout


def test_a_new_commit_invalidates_the_cache(
    kiln_root: Path, tmp_path: Path, git_server: GitServer
) -> None:
    git_server.commit({"app/main.txt": "one\n"}, "first")
    ctx = context(tmp_path, f"FROM busybox:base\nADD {git_server.url('main:app')} /app/\n")
    assert "CACHED" not in built(ctx, "one")
    assert "CACHED" in built(ctx, "one")
    git_server.commit({"app/main.txt": "two\n"}, "second")
    assert "CACHED" not in built(ctx, "two")
    assert (unpack(kiln_root, "two", tmp_path) / "app" / "main.txt").read_text() == "two\n"


def test_an_unknown_ref_is_an_error(kiln_root: Path, tmp_path: Path, git_server: GitServer) -> None:
    git_server.commit({"a.txt": "a\n"}, "first")
    ctx = context(tmp_path, f"FROM busybox:base\nADD {git_server.url('nope')} /dst/\n")
    result = build(ctx, "nope")
    assert result.exit_code == 1
    assert (
        f"{ctx}/Dockerfile:2: git://127.0.0.1:{git_server.port}/repo.git has no branch, "
        "tag or commit 'nope'"
    ) in result.stderr
