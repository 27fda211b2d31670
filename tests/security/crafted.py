"""A crafted registry: a small HTTP server in the test that answers what the test says,
byte for byte, and logs every request it gets (with its headers)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (status, headers, body) for a path; a callable body is streamed: it writes itself
Answer = tuple[int, dict[str, str], bytes | Callable[[BaseHTTPRequestHandler], None]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class CraftedRegistry:
    port: int = 0
    routes: dict[tuple[str, str], Answer] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    challenge: str = ""  # a WWW-Authenticate answer to requests that carry no credentials

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def serve(self, method: str, path: str, status: int = 200, body: bytes = b"",
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.routes[method, path] = (status, headers or {}, body)

    def serve_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.serve("GET", f"/v2/{repository}/blobs/{digest}", body=data)
        self.serve("HEAD", f"/v2/{repository}/blobs/{digest}", body=b"")
        return digest

    def serve_manifest(self, repository: str, tag: str, manifest: dict | bytes) -> None:
        data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        self.serve("GET", f"/v2/{repository}/manifests/{tag}", body=data, headers=headers)


@contextmanager
def crafted_registry() -> Iterator[CraftedRegistry]:
    registry = CraftedRegistry()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self) -> None:
            registry.log.append(Request(self.command, self.path, dict(self.headers)))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if registry.challenge and "Authorization" not in self.headers:
                self.send_response(401)
                self.send_header("WWW-Authenticate", registry.challenge)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, headers, body = registry.routes.get(
                (self.command, self.path.partition("?")[0]),
                (200, {}, b"{}") if self.path == "/v2/" else (404, {}, b'{"errors":[]}'),
            )
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if callable(body):
                self.send_header("Connection", "close")
                self.end_headers()
                # the client may stop reading: what the tests want to see
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    body(self)
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    registry.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
