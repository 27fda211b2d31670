"""Build sources: real git repositories made here (file:// URLs), and local paths."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kiln.workflow import SourceError, SourceSpec, prepare_source


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, str]:
    """A repository with three commits on main (the first tagged v1), and a branch."""
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    commits = {}
    for n in (1, 2, 3):
        (root / "app" / "Dockerfile").write_text(f"FROM scratch\nLABEL n={n}\n")
        git(root, "add", ".")
        git(root, "commit", "-qm", f"commit {n}")
        commits[f"c{n}"] = git(root, "rev-parse", "HEAD")
        if n == 1:
            git(root, "tag", "v1")
    git(root, "checkout", "-q", "-b", "feature", commits["c2"])
    (root / "app" / "Dockerfile").write_text("FROM scratch\nLABEL n=feature\n")
    git(root, "commit", "-qam", "feature")
    commits["feature"] = git(root, "rev-parse", "HEAD")
    git(root, "checkout", "-q", "main")
    return {"uri": f"file://{root}", **commits}


def label_of(source_dockerfile: Path) -> str:
    return source_dockerfile.read_text().split("LABEL n=")[1].strip()


@pytest.mark.parametrize(
    ("ref", "commit", "label"),
    [("", "c3", "3"), ("main", "c3", "3"), ("v1", "c1", "1"), ("feature", "feature", "feature")],
)
def test_git_refs_resolve_shallowly(
    repo: dict[str, str], tmp_path: Path, ref: str, commit: str, label: str
) -> None:
    params = {"git_commit": ref} if ref else {}
    spec = SourceSpec.from_dict({"provider": "git", "uri": repo["uri"],
                                 "dockerfile_path": "app/", "provider_params": params})  # fmt: skip
    source = prepare_source(spec, tmp_path / "work")
    assert source.commit == repo[commit]
    assert label_of(source.dockerfile) == label and source.context.name == "app"
    assert git(source.root, "rev-parse", "--is-shallow-repository") == "true"


def test_a_commit_by_its_sha_and_by_an_abbreviation(repo: dict[str, str], tmp_path: Path) -> None:
    for n, ref in enumerate((repo["c2"], repo["c2"][:10])):
        spec = SourceSpec("git", repo["uri"], "app", {"git_commit": ref})
        source = prepare_source(spec, tmp_path / f"work{n}")
        assert source.commit == repo["c2"] and label_of(source.dockerfile) == "2"


def test_git_errors_say_what_is_missing(repo: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot fetch file:///nonexistent"):
        prepare_source(SourceSpec("git", "file:///nonexistent/repo"), tmp_path / "w1")
    with pytest.raises(SourceError, match="has no branch, tag or commit 'nope'"):
        prepare_source(SourceSpec("git", repo["uri"], "app", {"git_commit": "nope"}),
                       tmp_path / "w2")  # fmt: skip
    with pytest.raises(SourceError, match=r"@.{12}: no Dockerfile at 'elsewhere'"):
        prepare_source(SourceSpec("git", repo["uri"], "elsewhere"), tmp_path / "w3")


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        h.update(f"{path}:{st.st_mode}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()


def test_a_path_is_used_in_place_unmodified_or_copied(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "docker").mkdir(parents=True)
    (project / "docker" / "Dockerfile.custom").write_text("FROM scratch\n")
    before = tree_digest(project)
    spec = SourceSpec.from_dict({"provider": "path", "uri": f"file://{project}",
                                 "dockerfile_path": "docker/Dockerfile.custom"})  # fmt: skip
    in_place = prepare_source(spec, tmp_path / "work")
    assert in_place.root == project and in_place.dockerfile.name == "Dockerfile.custom"
    assert tree_digest(project) == before
    copied = prepare_source(SourceSpec("path", str(project), "docker/Dockerfile.custom",
                                       {"copy": True}), tmp_path / "work2")  # fmt: skip
    assert copied.root != project and copied.dockerfile.read_text() == "FROM scratch\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"provider": "svn", "uri": "x"}, "expected 'git' or 'path'"),
        ({"provider": "path"}, "needs a 'uri'"),
        ({"provider": "path", "uri": "relative/dir"}, "must be absolute"),
        ({"provider": "path", "uri": "file:///no/such/dir"}, "no such directory"),
        (
            {"provider": "path", "uri": "file:///tmp", "dockerfile_path": "../etc"},
            "leaves the source",
        ),
    ],
)
def test_bad_sources_are_clear_errors(data: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=message):
        prepare_source(SourceSpec.from_dict(data), tmp_path / "work")
