"""Fetching from git repositories with the git command: shared by workflow sources and
``ADD <git URL>``, so that neither depends on the other."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from kiln.errors import KilnError

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class GitError(KilnError):
    """A repository, ref or commit that cannot be had."""


def check_ref(uri: str, ref: str) -> None:
    """Refuse a ref or URI that git could take for an option (``--upload-pack=CMD`` runs
    CMD) or that no ref can be: they come from Dockerfiles and build descriptions."""
    if uri.startswith("-") or any(c in uri for c in "\0\n\r"):
        raise GitError(f"{uri!r} is not a repository URL")
    if ref.startswith("-") or any(c.isspace() or not c.isprintable() for c in ref):
        raise GitError(f"{ref!r} is not a branch, tag or commit")


def fetch(uri: str, ref: str, root: Path) -> str:
    """Check ``uri`` out at ``ref`` (default: the remote's HEAD) into ``root``, shallowly
    where the server allows it; the commit. Every argument that comes from outside is
    checked first and passed after ``--end-of-options`` (or ``--``)."""
    check_ref(uri, ref)
    root.mkdir(parents=True)
    git(root, "init", "--quiet")
    git(root, "remote", "add", "--", "origin", uri)
    shallow = git(root, "fetch", "--quiet", "--depth", "1", "--end-of-options", "origin",
                  ref or "HEAD", check=False)  # fmt: skip
    if shallow.returncode == 0:
        git(root, "checkout", "--quiet", "--detach", "FETCH_HEAD")
    else:
        # The server does not hand out that ref shallowly (an abbreviated or unadvertised
        # commit): fetch everything and resolve it here.
        full = git(root, "fetch", "--quiet", "--tags", "--end-of-options", "origin",
                   "+refs/heads/*:refs/remotes/origin/*", check=False)  # fmt: skip
        if full.returncode != 0:
            raise GitError(f"cannot fetch {uri}: {last_line(full.stderr)}")
        if not ref:
            raise GitError(f"cannot fetch {uri}: {last_line(shallow.stderr)}")
        target = next(
            (c for c in (f"origin/{ref}", ref) if git(
                root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{c}^{{commit}}",
                check=False,
            ).returncode == 0),
            None,
        )  # fmt: skip
        if target is None:
            raise GitError(f"{uri} has no branch, tag or commit {ref!r}")
        git(root, "checkout", "--quiet", "--detach", target)
    return git(root, "rev-parse", "HEAD").stdout.strip()


def resolve(uri: str, ref: str) -> str:
    """The commit ``ref`` (a branch, a tag, HEAD when empty, or a full commit id) names on
    the remote, asked with ``git ls-remote``: no objects fetched. An abbreviated commit id
    cannot be asked for this way; it comes back as it is, to be resolved by fetching."""
    check_ref(uri, ref)
    if _COMMIT.fullmatch(ref):
        return ref
    wanted = ref or "HEAD"
    listed = git(Path("/"), "ls-remote", "--", uri, wanted, check=False)
    if listed.returncode != 0:
        raise GitError(f"cannot reach {uri}: {last_line(listed.stderr)}")
    refs: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        commit, _, name = line.partition("\t")
        refs[name] = commit
    for name in (wanted, f"refs/heads/{wanted}", f"refs/tags/{wanted}^{{}}",
                 f"refs/tags/{wanted}"):  # fmt: skip
        if name in refs:
            return refs[name]
    if re.fullmatch(r"[0-9a-f]{4,39}", ref):
        return ref
    raise GitError(f"{uri} has no branch, tag or commit {wanted!r}")


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},  # fail, never ask for a password
    )  # fmt: skip
    if check and result.returncode != 0:
        raise GitError(f"git {args[0]} failed: {last_line(result.stderr)}")
    return result


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
