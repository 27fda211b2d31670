"""Credentials as Docker keeps them: auths, credsStore, credHelpers (the helper protocol)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from kiln.registry import Credentials, CredentialsError, credentials_for, remove_login, save_login


def config(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, answer: str) -> None:
    """A docker-credential-NAME program on PATH that answers ``answer`` for any host it is
    asked about on stdin, and fails as real helpers do for an unknown one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / f"docker-credential-{name}"
    program.write_text(
        "#!/bin/sh\nread host\n"
        f'if [ "$host" = "known.example:5000" ]; then echo \'{answer}\'; exit 0; fi\n'
        "echo 'credentials not found in native keychain'; exit 1\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_auths_entries_are_base64_user_and_password(tmp_path: Path) -> None:
    auth = base64.b64encode(b"me:pa:ss").decode()
    path = config(tmp_path, {"auths": {"reg.example": {"auth": auth}}})
    assert credentials_for("reg.example", path) == Credentials("me", "pa:ss")
    assert credentials_for("other.example", path) is None


def test_docker_hub_is_found_under_its_v1_address(tmp_path: Path) -> None:
    auth = base64.b64encode(b"hubuser:pw").decode()
    path = config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": auth}}})
    assert credentials_for("docker.io", path) == Credentials("hubuser", "pw")


def test_cred_helpers_come_before_creds_store_and_auths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path, monkeypatch, "special", '{"ServerURL":"x","Username":"h","Secret":"s"}')
    helper(tmp_path, monkeypatch, "store", '{"ServerURL":"x","Username":"st","Secret":"s2"}')
    auth = base64.b64encode(b"a:b").decode()
    path = config(
        tmp_path,
        {
            "credHelpers": {"known.example:5000": "special"},
            "credsStore": "store",
            "auths": {"known.example:5000": {"auth": auth}},
        },
    )
    assert credentials_for("known.example:5000", path) == Credentials("h", "s")
    assert credentials_for("unknown.example", path) is None  # the store has none: anonymous


def test_an_identity_token_from_a_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper(tmp_path, monkeypatch, "tok", '{"ServerURL":"x","Username":"<token>","Secret":"rt"}')
    path = config(tmp_path, {"credsStore": "tok"})
    assert credentials_for("known.example:5000", path) == Credentials("", "", "rt")


def test_a_missing_helper_is_a_clear_error(tmp_path: Path) -> None:
    path = config(tmp_path, {"credsStore": "nonexistent-kiln-test"})
    with pytest.raises(CredentialsError, match="docker-credential-nonexistent-kiln-test"):
        credentials_for("reg.example", path)


def test_login_and_logout_edit_only_their_entry(tmp_path: Path) -> None:
    path = config(tmp_path, {"auths": {"keep.example": {"auth": "eDp5"}}, "other": 1})
    save_login("reg.example:5000", Credentials("u", "p"), path)
    assert credentials_for("reg.example:5000", path) == Credentials("u", "p")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert remove_login("reg.example:5000", path)
    data = json.loads(path.read_text())
    assert data == {"auths": {"keep.example": {"auth": "eDp5"}}, "other": 1}
    assert not remove_login("reg.example:5000", path)


def test_credentials_never_show_their_password() -> None:
    assert "secret" not in repr(Credentials("user", "secret"))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (403, "access denied by"),
        (404, "not found on"),
        (401, "authentication required"),
    ],
)
def test_refusals_name_the_image_and_the_registry(status: int, expected: str) -> None:
    """What a registry's refusals read like (a minimal HTTP server answers every request
    with ``status`` and a distribution error body; real registries are tested elsewhere)."""
    import http.server
    import threading

    from kiln.registry import RegistryClient, RegistryError

    class Refuser(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"errors": [{"code": "DENIED", "message": "nope"}]}).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="x"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        client = RegistryClient(host, credentials=Credentials("u", "p"))
        with client, pytest.raises(RegistryError) as raised:
            client.get_manifest("team/app", "1", ["application/json"])
    finally:
        server.shutdown()
        server.server_close()
    message = str(raised.value)
    assert f"{host}/team/app:1" in message and expected in message
    assert "DENIED: nope" in message and raised.value.status == status
