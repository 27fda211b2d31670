"""What ADD fetches from outside the context: files from http(s) URLs and git repositories,
told apart as BuildKit tells them apart.

Downloads are kept under the store (``cache/http``): the content by its sha256 digest, and
per URL the digest with the response's ETag and Last-Modified, so that a rebuild asks the
server only whether the file changed (a conditional request; 304 reuses the copy), and a
step with ``--checksum`` does not ask at all once the content is here.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln import git
from kiln.errors import KilnError
from kiln.tree import Tree

if TYPE_CHECKING:
    import httpx

# BuildKit's sshutil.IsImplicitSSHTransport: user@host:path, scp's syntax.
_SCP_LIKE = re.compile(r"[A-Za-z0-9_-]+@[A-Za-z0-9.-]+:.*")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


class RemoteError(KilnError):
    """A URL or repository that cannot be fetched, or that is not what ``--checksum`` says."""


@dataclass(frozen=True)
class GitSource:
    """``remote#ref:subdir`` as ADD reads it."""

    remote: str
    ref: str = ""
    subdir: str = ""


@dataclass(frozen=True)
class Download:
    """A URL's content in the cache, with the mtime BuildKit gives the file: the response's
    Last-Modified, else the epoch."""

    path: Path
    digest: str
    mtime: float


def git_source(source: str) -> GitSource | None:
    """``source`` as a git repository, if BuildKit takes it for one: git:// and ssh:// URLs,
    user@host:path, and http(s) URLs whose path ends in ``.git``."""
    remote, _, fragment = source.partition("#")
    if remote.startswith(("http://", "https://")):
        if not urllib.parse.urlsplit(remote).path.endswith(".git"):
            return None
    elif not (remote.startswith(("git://", "ssh://")) or _SCP_LIKE.fullmatch(remote)):
        return None
    ref, _, subdir = fragment.partition(":")
    return GitSource(remote, ref, subdir)


def is_url(source: str) -> bool:
    """An http(s) URL ADD downloads (a git repository's URL is not one)."""
    return source.startswith(("http://", "https://")) and git_source(source) is None


def url_filename(url: str) -> str:
    """The name a downloaded file gets: the URL path's last part, as BuildKit's Dockerfile
    frontend names it (never Content-Disposition)."""
    base = posixpath.basename(urllib.parse.urlsplit(url).path)
    return base if base not in ("", ".", "..") else "__unnamed__"


def check_checksum(checksum: str) -> None:
    if not _SHA256.fullmatch(checksum):
        raise RemoteError(f"--checksum={checksum}: expected sha256: and 64 hex digits")


class HttpCache:
    """Downloads kept in ``root``, revalidated with the server on use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def known(self, url: str, checksum: str) -> Download | None:
        """The cached content of ``url`` if it has digest ``checksum``: no request."""
        meta = self._meta(url)
        if meta is None or meta["digest"] != checksum:
            return None
        return self._download(meta)

    def fetch(self, url: str, checksum: str = "") -> Download:
        """``url``'s content: the cached copy when the server says it is unchanged (or when
        it has digest ``checksum``), else downloaded, verified against ``checksum``, kept."""
        import httpx  # here: most builds fetch nothing and need not pay for the import

        if checksum and (hit := self.known(url, checksum)) is not None:
            return hit
        meta = self._meta(url)
        cached = self._download(meta) if meta is not None else None
        headers = {}
        if meta is not None and cached is not None:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
        timeout = httpx.Timeout(60.0, connect=15.0)
        try:
            with (
                httpx.Client(follow_redirects=True, timeout=timeout) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 304 and cached is not None:
                    download = cached
                elif not response.is_success:
                    raise RemoteError(
                        f"cannot fetch {url}: HTTP {response.status_code} "
                        f"{response.reason_phrase}".rstrip()
                    )
                else:
                    download = self._save(url, response, checksum)
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            raise RemoteError(f"cannot fetch {url}: {str(err) or type(err).__name__}") from None
        if checksum and download.digest != checksum:
            raise _mismatch(url, checksum, download.digest)
        return download

    def _save(self, url: str, response: httpx.Response, checksum: str) -> Download:
        hasher = hashlib.sha256()
        fd, name = tempfile.mkstemp(prefix="download-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    hasher.update(chunk)
                    out.write(chunk)
            digest = f"sha256:{hasher.hexdigest()}"
            if checksum and digest != checksum:
                raise _mismatch(url, checksum, digest)  # and nothing is kept
            os.replace(name, self.blobs / digest[7:])
        finally:
            if os.path.exists(name):
                os.unlink(name)
        meta = {
            "url": url,
            "digest": digest,
            "etag": response.headers.get("ETag", ""),
            "last_modified": response.headers.get("Last-Modified", ""),
        }
        fd, name = tempfile.mkstemp(prefix="meta-", dir=self.root)
        with os.fdopen(fd, "w") as out:
            json.dump(meta, out)
        os.replace(name, self._meta_path(url))
        download = self._download(meta)
        assert download is not None
        return download

    def _meta_path(self, url: str) -> Path:
        return self.root / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def _meta(self, url: str) -> dict[str, str] | None:
        try:
            meta: dict[str, str] = json.loads(self._meta_path(url).read_text())
        except (OSError, ValueError):
            return None
        return meta if meta.get("url") == url else None

    def _download(self, meta: dict[str, str]) -> Download | None:
        path = self.blobs / meta["digest"][7:]
        if not path.is_file():
            return None
        return Download(path, meta["digest"], _http_time(meta.get("last_modified", "")))


def _mismatch(url: str, checksum: str, digest: str) -> RemoteError:
    return RemoteError(f"checksum mismatch for {url}: expected {checksum}, got {digest}")


def _http_time(value: str) -> float:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else 0.0
    except (TypeError, ValueError):
        return 0.0


def resolve_git(source: GitSource, checksum: str = "") -> str:
    """The commit ``source``'s ref names now (``git ls-remote``), which must start with
    ``checksum`` when one is given (BuildKit's ``ADD --checksum`` for git)."""
    commit = git.resolve(source.remote, source.ref)
    if checksum and not commit.startswith(checksum):
        raise RemoteError(
            f"checksum mismatch for {source.remote}#{source.ref}: expected commit "
            f"{checksum}, got {commit}"
        )
    return commit


def checkout_git(source: GitSource, commit: str, into: Path, keep_git_dir: bool) -> str:
    """``source`` checked out at ``commit`` into ``into``; the directory ADD copies (the
    subdir), resolved inside the checkout: a symlink in the repository never leads out.
    ``.git`` is kept only with ``keep_git_dir``; files keep their checkout mtimes, as in
    BuildKit."""
    fetched = git.fetch(source.remote, source.ref, into)
    if not fetched.startswith(commit):
        raise RemoteError(f"{source.remote}: {source.ref or 'HEAD'} moved during the build")
    if not keep_git_dir:
        shutil.rmtree(into / ".git")
    with Tree(into) as checkout:
        subdir = checkout.canonical(source.subdir, follow=True)
        found = subdir is not None and checkout.is_dir(subdir)
    if subdir is None or not found or subdir.split("/")[0] == ".git":
        raise RemoteError(f"{source.remote}: no directory {source.subdir!r} at {commit[:12]}")
    return subdir
