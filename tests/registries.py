"""Debian's docker-registry (the CNCF distribution registry), run on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
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


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def outward_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def start_registry(
    base: Path,
    *,
    htpasswd: Path | None = None,
    token: TokenServer | None = None,
    tls: KeyPair | None = None,
    address: str = "127.0.0.1",
) -> Registry:
    """A registry storing under ``base``: plain HTTP, or HTTPS with ``tls``'s certificate;
    anonymous, or with Basic auth (``htpasswd``) or token auth (``token``'s realm)."""
    if shutil.which(REGISTRY) is None:
        pytest.skip("Debian's docker-registry is not installed (.ci/run installs it)")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port(address)
    auth = ""
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: kiln-tests\n    path: {htpasswd}\n"
    if token is not None:
        bundle = base / "token-signer.crt"
        bundle.write_bytes(token.pair.cert_pem)
        auth = (
            f"auth:\n  token:\n    realm: {token.url}\n    service: {token.service}\n"
            f"    issuer: {token.issuer}\n    rootcertbundle: {bundle}\n"
        )
    listen = ""
    if tls is not None:
        (base / "server.crt").write_bytes(tls.cert_pem)
        (base / "server.key").write_bytes(tls.key_pem)
        listen = f"  tls:\n    certificate: {base}/server.crt\n    key: {base}/server.key\n"
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}:{port}\n" + listen + auth
    )
    log = base / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=out, stderr=out)
    registry = Registry(f"{address}:{port}", process, log)
    scheme = "https" if tls is not None else "http"
    deadline = time.monotonic() + 30
    while True:
        try:
            ready = httpx.get(f"{scheme}://{registry.host}/v2/", timeout=1, verify=False)
            if ready.status_code in (200, 401):
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


# -- keys, certificates and a token server, made for the test session ------------------------


@dataclass
class KeyPair:
    key_pem: bytes
    cert_pem: bytes
    key: object  # cryptography's RSAPrivateKey


def make_certificate(directory: Path, name: str, *, issuer: KeyPair | None = None,
                     hosts: tuple[str, ...] = ()) -> KeyPair:  # fmt: skip
    """An RSA key and certificate: a self-signed CA, or a server certificate ``issuer``
    signs for ``hosts`` (IP addresses)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.issuer_name(subject).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
        signer = key
    else:
        ca_cert = x509.load_pem_x509_certificate(issuer.cert_pem)
        builder = builder.issuer_name(ca_cert.subject).add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]),
            critical=False,
        )
        signer = issuer.key  # type: ignore[assignment]
    cert = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    pair = KeyPair(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        cert.public_bytes(serialization.Encoding.PEM),
        key,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.key").write_bytes(pair.key_pem)
    (directory / f"{name}.crt").write_bytes(pair.cert_pem)
    return pair


def libtrust_key_id(pair: KeyPair) -> str:
    """The key ID distribution derives from a public key (docker/libtrust's format)."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    public = pair.key.public_key()  # type: ignore[attr-defined]
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    """The token endpoint of distribution's token auth, as Docker Hub runs one: it checks
    Basic credentials (when ``users`` is not empty) and signs a JWT granting the scopes
    asked for."""

    def __init__(
        self,
        pair: KeyPair,
        service: str,
        issuer: str,
        users: dict[str, str],
        refresh_tokens: dict[str, str] | None = None,
    ) -> None:
        import http.server
        import threading

        self.pair, self.service, self.issuer, self.users = pair, service, issuer, users
        self.refresh_tokens = refresh_tokens or {}  # OAuth2 refresh token -> user
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                status, body = server.answer(self.path, self.headers.get("Authorization", ""))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # OAuth2: grant_type=refresh_token
                length = int(self.headers.get("Content-Length") or 0)
                form = self.rfile.read(length).decode()
                server.requests.append(f"POST {form}")
                status, body = server.refresh(form)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, authorization: str) -> tuple[int, bytes]:
        import base64
        import json
        import urllib.parse

        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        user = ""
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(user) != password:
                return 401, b'{"details":"wrong credentials"}'
        elif self.users:
            return 401, b'{"details":"credentials required"}'
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = self.sign(user, access)
        return 200, json.dumps({"token": token, "expires_in": 300}).encode()

    def refresh(self, form: str) -> tuple[int, bytes]:
        import json
        import urllib.parse

        fields = urllib.parse.parse_qs(form)
        user = self.refresh_tokens.get(fields.get("refresh_token", [""])[0])
        if fields.get("grant_type") != ["refresh_token"] or user is None:
            return 401, b'{"details":"bad refresh token"}'
        access = []
        for scope in " ".join(fields.get("scope", [])).split():
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        return 200, json.dumps({"access_token": self.sign(user, access)}).encode()

    def sign(self, subject: str, access: list[dict[str, object]]) -> str:
        import base64
        import json
        import secrets

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).decode().rstrip("=")

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": libtrust_key_id(self.pair)}
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        signature = self.pair.key.sign(  # type: ignore[attr-defined]
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{b64(signature)}"


class FaultyProxy:
    """An HTTP proxy in front of a registry that fails some requests on purpose: ``fault``
    gets (request number, method, path) and says "500", "429 N" (too many requests, retry
    after N seconds), "drop" (close the connection with no answer) or "" (pass the request
    on). ``times`` has when each request came."""

    def __init__(self, upstream: str, fault: Callable[[int, str, str], str]) -> None:
        import http.server
        import threading

        self.upstream, self.fault = upstream, fault
        self.count = 0
        self.injected: list[str] = []
        self.times: list[tuple[float, str, str]] = []  # (monotonic time, method, path)
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                with proxy.lock:
                    proxy.count += 1
                    number = proxy.count
                    proxy.times.append((time.monotonic(), self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy.fault(number, self.command, self.path)
                if action:
                    proxy.injected.append(f"{action} {self.command} {self.path}")
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action == "500" or action.startswith("429 "):
                    self.send_response(int(action[:3]))
                    if action.startswith("429 "):
                        self.send_header("Retry-After", action[4:])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                skipped = ("host", "content-length", "connection")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skipped}
                headers["Host"] = self.headers["Host"]
                answer = httpx.request(
                    self.command, f"http://{proxy.upstream}{self.path}", headers=headers,
                    content=body, timeout=60,
                )  # fmt: skip
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "content-encoding"):  # fmt: skip
                        self.send_header(key, value)
                data = b"" if self.command == "HEAD" else answer.content
                self.send_header("Content-Length", str(len(data) if data else
                                 answer.headers.get("Content-Length", "0")))  # fmt: skip
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RedirectingFront:
    """A registry front that wants Basic auth and, as registries backed by object storage
    do, answers blob GETs with a redirect to another server (which records the
    Authorization header it got: a client must not send its registry credentials there)."""

    def __init__(self, upstream: str, user: str, password: str) -> None:
        import base64
        import http.server
        import threading
        import urllib.parse

        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.storage_saw: list[str | None] = []
        front = self

        class Storage(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                front.storage_saw.append(self.headers.get("Authorization"))
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                digest = self.path.split("?")[0].rsplit("/", 1)[1]
                blob = httpx.get(f"http://{upstream}/v2/{query['repo'][0]}/blobs/{digest}")
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob.content)))
                self.end_headers()
                self.wfile.write(blob.content)

            def log_message(self, *args: object) -> None:
                pass

        class Front(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="front"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = self.path.split("?")[0]
                if "/blobs/sha256:" in path:
                    name, digest = path[len("/v2/") :].split("/blobs/")
                    self.send_response(307)
                    self.send_header(
                        "Location", f"http://{front.storage}/blob/{digest}?repo={name}"
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                accept = self.headers.get("Accept", "")
                answer = httpx.get(f"http://{upstream}{self.path}", headers={"Accept": accept})
                self.send_response(answer.status_code)
                for key in ("Content-Type", "Docker-Content-Digest"):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        self.servers = [
            http.server.ThreadingHTTPServer(("127.0.0.1", 0), h) for h in (Front, Storage)
        ]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.host = f"127.0.0.1:{self.servers[0].server_address[1]}"
        self.storage = f"127.0.0.1:{self.servers[1].server_address[1]}"

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
