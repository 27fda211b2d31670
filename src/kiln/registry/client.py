"""A client for one registry, over the OCI distribution API (httpx).

It finds out how to authenticate from the registry's own 401 (Basic, or a Bearer token
fetched from the realm the challenge names and cached per scope), retries connection
errors, 429 and 5xx with backoff, and turns the rest into ``RegistryError`` messages that
name the image and the registry, never a credential.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from kiln.errors import KilnError
from kiln.oci.objects import MAX_DOCUMENT
from kiln.registry.credentials import Credentials, credentials_for

CERTS_DIR = Path("/etc/docker/certs.d")
_RETRIES = 5
# Blobs above this size go up in chunks (PATCH with Content-Range), each small enough for
# proxies that limit request bodies; below it, one streamed PUT.
CHUNKED_ABOVE = 256 << 20
CHUNK_SIZE = 64 << 20
_RETRIED_STATUS = {429, 500, 502, 503, 504}
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
# Docker Hub is addressed as docker.io in references, served from another host.
_API_HOSTS = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}

Chunks = Callable[[], Iterable[bytes]]
# Told of a transfer's progress: (blob digest, bytes so far, bytes in all).
Progress = Callable[[str, int, int], None]


class RegistryError(KilnError):
    """A registry that refused, failed or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry serves it: its exact bytes, type and digest."""

    data: bytes
    media_type: str
    digest: str


def host_name(host: str) -> str:
    """``host`` without its port: ``[::1]:5000`` is ``::1``, ``example.com:443`` is
    ``example.com``; an address that is not well formed is returned as it is."""
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        return address if bracket and (not rest or rest.startswith(":")) else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (with or without a port) is this machine: dockerd treats such
    registries as insecure by default, and so does kiln."""
    name = host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """Requests to ``host`` (``registry[:port]`` as in image references)."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool | None = None,
        credentials: Credentials | None = None,
        anonymous: bool = False,
        certs_dir: Path = CERTS_DIR,
        timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.insecure = is_loopback(host) if insecure is None else insecure
        self.credentials = None if anonymous else (credentials or credentials_for(host))
        self._api = _API_HOSTS.get(host, host)
        self._scheme = "" if self.insecure else "https"
        self._basic = False
        self._tokens: dict[str, str] = {}
        self._token_lock = threading.Lock()  # parallel uploads share one token per scope
        verify: ssl.SSLContext | bool = False
        if not self.insecure:
            verify = ssl.create_default_context()
            ca = certs_dir / host / "ca.crt"
            if ca.is_file():
                verify.load_verify_locations(cafile=str(ca))
        self._http = httpx.Client(verify=verify, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        """Check that the registry answers and takes the credentials (as ``docker login``)."""
        response = self._request("GET", "/v2/")
        self._check(response, f"{self.host}")

    # -- blobs

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self._request("HEAD", f"/v2/{repository}/blobs/{digest}", repository)
        if response.status_code == 404:
            return False
        self._check(response, f"blob {digest} of {repository}")
        return True

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Link ``digest`` from another repository of this registry, with no upload."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        scope = f"repository:{repository}:pull,push repository:{source}:pull"
        response = self._request("POST", f"/v2/{repository}/blobs/uploads/?{query}", scope=scope)
        if response.status_code == 201:
            return True
        self._check(response, f"blob {digest} of {repository}")
        location = response.headers.get("Location")
        if location:  # the registry started an upload instead: cancel it
            self._request("DELETE", self._url(location, response), scope=scope)
        return False

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        chunks: Chunks,
        *,
        chunked_above: int = CHUNKED_ABOVE,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        """Upload a blob: POST for a session, then one streamed PUT of ``chunks()``, or for a
        large blob PATCHes of ``chunk_size`` bytes and a closing PUT. A failed upload is
        started again from the beginning."""
        scope = f"repository:{repository}:pull,push"
        what = f"blob {digest} to {self.host}/{repository}"
        for attempt in range(_RETRIES):
            started = self._request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope)
            self._check(started, what, expected=(202,))
            location = self._url(started.headers["Location"], started)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            content: bytes | Iterable[bytes] = b""
            try:
                if size > chunked_above:
                    location = self._patch_chunks(location, scope, chunks(), chunk_size, what)
                    headers = {"Content-Length": "0"}
                else:
                    content = chunks()
                url = _with_query(location, [("digest", digest)])
                done = self._request(
                    "PUT", url, scope=scope, headers=headers, content=content, retry=False
                )
            except RegistryError:
                if attempt + 1 == _RETRIES:
                    raise
                _pause(attempt)
                continue
            if done.status_code in _RETRIED_STATUS and attempt + 1 < _RETRIES:
                _pause(attempt, done.headers.get("Retry-After"))
                continue
            self._check(done, what, expected=(201,))
            return

    def _patch_chunks(
        self, location: str, scope: str, blocks: Iterable[bytes], chunk_size: int, what: str
    ) -> str:
        """Send ``blocks`` as PATCHes of about ``chunk_size`` bytes; the last Location."""
        offset = 0
        pending: list[bytes] = []
        pending_size = 0

        def send() -> str:
            nonlocal offset
            body = b"".join(pending)
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(body)),
                "Content-Range": f"{offset}-{offset + len(body) - 1}",
            }
            answer = self._request(
                "PATCH", location, scope=scope, headers=headers, content=body, retry=False
            )
            self._check(answer, what, expected=(202,))
            offset += len(body)
            return self._url(answer.headers["Location"], answer)

        for block in blocks:
            pending.append(block)
            pending_size += len(block)
            if pending_size >= chunk_size:
                location = send()
                pending, pending_size = [], 0
        if pending:
            location = send()
        return location

    def get_blob(
        self,
        repository: str,
        digest: str,
        sink: Callable[[bytes], object],
        *,
        verify: bool = True,
    ) -> int:
        """Stream a blob into ``sink``, checking its digest (unless the sink does: ``verify``
        False); returns its size."""
        path = f"/v2/{repository}/blobs/{digest}"
        response = self._request("GET", path, repository, stream=True)
        for _ in range(5):  # blobs are often served from elsewhere: follow, without our auth
            if response.status_code not in (301, 302, 303, 307, 308):
                break
            target = self._url(response.headers["Location"], response)
            response.close()
            response = self._http.send(self._http.build_request("GET", target), stream=True)
        try:
            self._check(response, f"blob {digest} of {self.host}/{repository}")
            hasher, size = hashlib.sha256(), 0
            for chunk in response.iter_raw():  # as received: re-chunking costs a third
                if verify:
                    hasher.update(chunk)
                size += len(chunk)
                sink(chunk)
        finally:
            response.close()
        if verify and "sha256:" + hasher.hexdigest() != digest:
            raise RegistryError(f"blob {digest} of {self.host}/{repository} has another digest")
        return size

    # -- manifests

    def get_manifest(self, repository: str, reference: str, accept: Iterable[str]) -> Manifest:
        headers = {"Accept": ", ".join(accept)}
        path = f"/v2/{repository}/manifests/{reference}"
        what = f"{self.host}/{repository}:{reference}"
        response = self._request("GET", path, repository, headers=headers, stream=True)
        try:
            self._check(response, what)
            data = _read_at_most(response, MAX_DOCUMENT, f"{what}: the manifest")
        finally:
            response.close()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{self.host}/{repository}@{reference}: another manifest came")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return Manifest(data, media_type, digest)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest under a tag (or its digest); returns the digest, as checked."""
        scope = f"repository:{repository}:pull,push"
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=scope,
            headers={"Content-Type": media_type},
            content=data,
        )
        self._check(response, f"{self.host}/{repository}:{reference}", expected=(201, 200))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        reported = response.headers.get("Docker-Content-Digest")
        if reported and reported != digest:
            raise RegistryError(
                f"{self.host}/{repository}:{reference}: the registry reports digest "
                f"{reported}, the manifest sent has {digest}"
            )
        return digest

    # -- requests, auth and retries

    def _request(
        self,
        method: str,
        path: str,
        repository: str = "",
        *,
        scope: str = "",
        headers: dict[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        scope = scope or (f"repository:{repository}:pull" if repository else "")
        authenticated = False
        attempt = 0
        while True:
            url = path if path.startswith(("http://", "https://")) else self._base() + path
            # Credentials and tokens go to the registry itself, never to another host an
            # answer names (an upload Location elsewhere gets none).
            credentials = self._authorization(scope) if self._is_registry(url) else {}
            request = self._http.build_request(
                method, url, headers={**(headers or {}), **credentials}, content=content
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as err:
                if not retry or attempt + 1 >= _RETRIES or _tls_failure(err):
                    raise RegistryError(f"cannot reach {self.host}: {_reason(err)}") from None
                _pause(attempt)
                attempt += 1
                continue
            if response.status_code == 401 and not authenticated:
                response.close()
                self._authenticate(response, scope)
                authenticated = True
                if content is not None and not isinstance(content, bytes):
                    # a stream cannot be sent twice: the caller starts the upload again
                    raise RegistryError(f"{self.host} asked to authenticate during an upload", 401)
                continue
            if response.status_code in _RETRIED_STATUS and retry and attempt + 1 < _RETRIES:
                response.close()
                _pause(attempt, response.headers.get("Retry-After"))
                attempt += 1
                continue
            return response

    def _base(self) -> str:
        """https, or for an insecure registry whichever of https (unverified) and plain
        http it answers on."""
        if not self._scheme:
            try:
                self._http.get(f"https://{self._api}/v2/", timeout=5)
                self._scheme = "https"
            except httpx.TransportError:
                self._scheme = "http"
        return f"{self._scheme}://{self._api}"

    def _is_registry(self, url: str) -> bool:
        """Whether ``url`` is on the registry's own origin (scheme, host and port)."""
        return _origin_of(httpx.URL(url)) == _origin_of(httpx.URL(self._base()))

    def _may_get_password(self, realm: str) -> bool:
        """Whether a token realm may receive the user's password: over TLS, on the
        registry's host or a sibling of it (Docker Hub's registry-1.docker.io sends to
        auth.docker.io, GitLab's registry.gitlab.com to gitlab.com); over plain HTTP only
        on the host of a registry allowed to be insecure."""
        url = httpx.URL(realm)
        host = host_name(self._api)
        if url.scheme == "http":
            return self.insecure and url.host == host
        return url.scheme == "https" and (url.host == host or _siblings(url.host, host))

    def _url(self, location: str, response: httpx.Response) -> str:
        return str(response.request.url.join(location))

    def _authorization(self, scope: str) -> dict[str, str]:
        if self._basic and self.credentials is not None:
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        token = self._tokens.get(scope) or next(
            (t for granted, t in self._tokens.items() if _covers(granted, scope)), None
        )
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _authenticate(self, response: httpx.Response, scope: str) -> None:
        with self._token_lock:
            sent = response.request.headers.get("Authorization")
            if sent != self._authorization(scope).get("Authorization"):
                return  # another thread authenticated meanwhile: try again with its token
            self._answer_challenge(response, scope)

    def _answer_challenge(self, response: httpx.Response, scope: str) -> None:
        challenge = response.headers.get("WWW-Authenticate", "")
        kind = challenge.split(" ", 1)[0].lower()
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        if kind == "basic":
            if self.credentials is None:
                raise RegistryError(f"{self.host} needs a login: run kiln login {self.host}", 401)
            self._basic = True
        elif kind == "bearer" and "realm" in params:
            # What the registry says it wants (an insufficient_scope answer names it) and
            # what the request needs, in one token.
            wanted = _merge_scopes(scope, params.get("scope", ""))
            self._tokens[scope] = self._fetch_token(params, wanted)
        else:
            raise RegistryError(f"{self.host} asks for an authentication kiln does not know", 401)

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params["realm"]
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for part in (scope or params.get("scope", "")).split():
            query.append(("scope", part))
        auth: tuple[str, str] | None = None
        if self.credentials is not None and not self._may_get_password(realm):
            raise RegistryError(
                f"{self.host} sends its token requests to {_origin(realm)}: kiln sends "
                "credentials only over TLS to the registry's own host (or a sibling of it)",
                401,
            )
        if self.credentials is not None and self.credentials.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": self.credentials.identity_token,
                    "client_id": "kiln", **dict(query[:1])}  # fmt: skip
            form["scope"] = " ".join(v for k, v in query if k == "scope")
            response = self._send_token(lambda: self._http.post(realm, data=form))
        else:
            if self.credentials is not None:
                auth = (self.credentials.username, self.credentials.password)
                query.append(("account", self.credentials.username))
            url = _with_query(realm, query)
            response = self._send_token(lambda: self._http.get(url, auth=auth))
        if response.status_code in (401, 403):
            raise RegistryError(f"{self.host}: the token service refused the credentials", 401)
        if response.status_code != 200:
            raise RegistryError(f"{self.host}: the token service answered {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise RegistryError(f"{self.host}: the token service answered no JSON") from None
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise RegistryError(f"{self.host}: the token service gave no token")
        return str(token)

    def _send_token(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        for attempt in range(_RETRIES):
            try:
                response = send()
            except httpx.TransportError as err:
                if attempt + 1 == _RETRIES:
                    raise RegistryError(f"cannot reach the token service of {self.host}: "
                                        f"{_reason(err)}") from None  # fmt: skip
                _pause(attempt)
                continue
            if response.status_code not in _RETRIED_STATUS or attempt + 1 == _RETRIES:
                return response
            _pause(attempt, response.headers.get("Retry-After"))
        raise AssertionError("not reached")

    def _check(
        self, response: httpx.Response, what: str, expected: tuple[int, ...] = (200,)
    ) -> None:
        status = response.status_code
        if status in expected:
            return
        if stream_open(response):
            response.read()
        detail = _error_detail(response)
        if status == 401:
            message = f"{what}: authentication required (kiln login {self.host})"
        elif status == 403:
            message = f"{what}: access denied by {self.host}"
        elif status == 404:
            message = f"{what}: not found on {self.host}"
        else:
            message = f"{what}: {self.host} answered {status}"
        raise RegistryError(message + (f" ({detail})" if detail else ""), status)


def _siblings(host: str, registry: str) -> bool:
    """Whether ``host`` lies in the domain the registry's host belongs to (the registry's
    name without its first label, of two labels at least): auth.docker.io for
    registry-1.docker.io. Addresses have no siblings."""
    try:
        ipaddress.ip_address(registry)
        return False
    except ValueError:
        pass
    parent = registry.partition(".")[2]
    return parent.count(".") >= 1 and (host == parent or host.endswith("." + parent))


def _origin_of(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _read_at_most(response: httpx.Response, limit: int, what: str) -> bytes:
    """A response's body, refused past ``limit`` bytes without reading the rest."""
    received = bytearray()
    for chunk in response.iter_bytes():
        received += chunk
        if len(received) > limit:
            raise RegistryError(f"{what} is larger than {limit >> 20} MiB")
    return bytes(received)


def _merge_scopes(*scopes: str) -> str:
    """Scopes (``repository:NAME:ACTIONS``, space-separated) merged: one per resource, with
    every action any of them asks for, in the order first asked."""
    merged: dict[str, dict[str, None]] = {}
    for scope in " ".join(scopes).split():
        resource, _, actions = scope.rpartition(":")
        merged.setdefault(resource, {}).update(dict.fromkeys(actions.split(",")))
    return " ".join(f"{resource}:{','.join(actions)}" for resource, actions in merged.items())


def _covers(granted: str, wanted: str) -> bool:
    """Whether a token for the scopes ``granted`` also serves the scopes ``wanted``."""
    have: dict[str, set[str]] = {}
    for scope in granted.split():
        resource, _, actions = scope.rpartition(":")
        have.setdefault(resource, set()).update(actions.split(","))
    for scope in wanted.split():
        resource, _, actions = scope.rpartition(":")
        if not set(actions.split(",")) <= have.get(resource, set()):
            return False
    return bool(wanted)


def stream_open(response: httpx.Response) -> bool:
    return not response.is_closed and not response.is_stream_consumed


def _error_detail(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""
    return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)


def _tls_failure(error: BaseException) -> bool:
    """Whether TLS failed in a way that trying again would repeat: a certificate not
    trusted, or a server that speaks plain HTTP. (Other TLS errors can be passing.)"""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or (
            isinstance(seen, ssl.SSLError) and seen.reason == "WRONG_VERSION_NUMBER"
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(error: httpx.TransportError) -> str:
    return str(error) or type(error).__name__


def _with_query(url: str, params: list[tuple[str, str]]) -> str:
    """``url`` with ``params`` added to its query (a Location or realm may carry its own)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + params
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _pause(attempt: int, retry_after: str | None = None) -> None:
    delay = min(0.2 * 2**attempt, 5.0)
    if retry_after and retry_after.isdecimal():
        delay = min(float(retry_after), 30.0)
    time.sleep(delay)


def file_chunks(
    path: Path, size: int = 1 << 20, progress: Progress | None = None, digest: str = ""
) -> Chunks:
    """A re-readable stream of ``path`` (an upload may be retried), telling ``progress``."""
    total = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        sent = 0
        with open(path, "rb") as f:
            while block := f.read(size):
                yield block
                sent += len(block)
                if progress is not None:
                    progress(digest, sent, total)

    return chunks
