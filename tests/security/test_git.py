"""Refs and URLs from Dockerfiles and build descriptions never become git options (item 7:
``#--upload-pack=CMD`` ran CMD)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kiln.workflow import SourceError, SourceSpec, prepare_source
from tests.engine.support import NEEDS_RUNC, context
from tests.gitserver import GitServer, git
from tests.security.support import kiln, one_error_line

INJECTIONS = ["--upload-pack=touch {pwned}", "--upload-pack=touch {pwned} x", "-u touch {pwned}"]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "Dockerfile").write_text("FROM scratch\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "x")
    return repo


@pytest.mark.parametrize("injection", INJECTIONS)
def test_a_build_source_ref_is_never_an_option(
    tmp_path: Path, store: Path, repository: Path, injection: str
) -> None:
    pwned = tmp_path / "pwned"
    status, output = kiln(
        "build", "--source", f"git+file://{repository}#{injection.format(pwned=pwned)}",
        "-t", "x:1",
    )  # fmt: skip
    assert status == 1
    assert "is not a branch, tag or commit" in one_error_line(output)
    assert not pwned.exists()


@pytest.mark.parametrize("injection", INJECTIONS)
def test_a_workflow_git_commit_is_never_an_option(
    tmp_path: Path, repository: Path, injection: str
) -> None:
    pwned = tmp_path / "pwned"
    spec = SourceSpec.from_dict({
        "provider": "git", "uri": f"file://{repository}",
        "provider_params": {"git_commit": injection.format(pwned=pwned)},
    })  # fmt: skip
    with pytest.raises(SourceError, match="is not a branch, tag or commit"):
        prepare_source(spec, tmp_path / "work")
    assert not pwned.exists()


def test_a_workflow_uri_is_never_an_option(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    spec = SourceSpec.from_dict({"provider": "git", "uri": f"--upload-pack=touch {pwned}"})
    with pytest.raises(SourceError, match="is not a repository URL"):
        prepare_source(spec, tmp_path / "work")
    assert not pwned.exists()


@NEEDS_RUNC
def test_an_add_fragment_is_never_an_option(
    kiln_root: Path, tmp_path: Path, git_server: GitServer
) -> None:
    git_server.commit({"a.txt": "a\n"}, "first")
    pwned = tmp_path / "pwned"
    ctx = context(
        tmp_path, f"FROM busybox:base\nADD {git_server.url(f'--upload-pack=touch {pwned}')} /x/\n"
    )
    status, output = kiln("build", "-q", str(ctx))
    assert status == 1
    assert "Dockerfile:2: " in one_error_line(output)
    assert not pwned.exists()
