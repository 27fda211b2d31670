"""Registry credentials where Docker keeps them: ``$DOCKER_CONFIG/config.json``.

Lookup order is Docker's: ``credHelpers.<host>``, then ``credsStore``, then ``auths.<host>``;
a helper is the ``docker-credential-<name>`` program, asked with the host on stdin.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import KilnError

# Docker Hub's credentials live under its old v1 address.
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


class CredentialsError(KilnError):
    """A Docker config or credential helper that cannot be used."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or, with ``identity_token``, an OAuth2 refresh token)."""

    username: str
    password: str
    identity_token: str = ""

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, password=***)"


def config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def credentials_for(host: str, path: Path | None = None) -> Credentials | None:
    """The credentials Docker would use for ``host``, or None (anonymous)."""
    path = path or config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise CredentialsError(f"{path}: cannot read Docker config: {err}") from None
    keys = _HUB_KEYS if host in _HUB_KEYS else (host, f"https://{host}", f"http://{host}")
    helpers = config.get("credHelpers") or {}
    helper = next((helpers[k] for k in keys if k in helpers), None) or config.get("credsStore")
    if helper:
        found = _from_helper(helper, keys[0])
        if found is not None:
            return found
    auths = config.get("auths") or {}
    entry = next((auths[k] for k in keys if k in auths), None)
    if not entry:
        return None
    if entry.get("identitytoken"):
        return Credentials(entry.get("username", ""), "", entry["identitytoken"])
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError:
            raise CredentialsError(f"{path}: the auth entry of {host} is not base64") from None
        return Credentials(username, password)
    return None


def _from_helper(helper: str, server: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run(
            [program, "get"], input=server, capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {program} is not installed") from None
    if result.returncode != 0:
        if "credentials not found" in (result.stdout + result.stderr).lower():
            return None
        raise CredentialsError(f"{program} failed for {server}: {result.stderr.strip()}")
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        raise CredentialsError(f"{program} answered something that is not JSON") from None
    username, secret = answer.get("Username", ""), answer.get("Secret", "")
    if username == "<token>":
        return Credentials("", "", secret)
    return Credentials(username, secret)


def save_login(host: str, credentials: Credentials, path: Path | None = None) -> Path:
    """Store ``credentials`` for ``host`` as ``docker login`` does without a helper."""
    path = path or config_path()
    config = _read(path)
    auth = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    key = _HUB_KEYS[0] if host in _HUB_KEYS else host
    config.setdefault("auths", {})[key] = {"auth": auth}
    _write(path, config)
    return path


def remove_login(host: str, path: Path | None = None) -> bool:
    """Forget ``host``'s stored credentials; whether there were any."""
    path = path or config_path()
    config = _read(path)
    auths = config.get("auths") or {}
    keys = _HUB_KEYS if host in _HUB_KEYS else (host, f"https://{host}", f"http://{host}")
    found = [k for k in keys if k in auths]
    for key in found:
        del auths[key]
    if found:
        _write(path, config)
    return bool(found)


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise CredentialsError(f"{path}: cannot read Docker config: {err}") from None
    return loaded if isinstance(loaded, dict) else {}


def _write(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent="\t")
    os.replace(temp, path)
