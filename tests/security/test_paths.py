"""Symlinks in a context, a stage or a repository against the host: COPY, ADD and
``RUN --mount=type=bind`` resolve every source inside the tree it comes from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from kiln.engine.remote import GitSource, RemoteError, checkout_git
from tests.engine.support import NEEDS_RUNC, context, invoke, unpack
from tests.security.support import tree_state

pytestmark = NEEDS_RUNC

SECRET = "host-secret-6f1d"


def failed_build(ctx: Path) -> str:
    """The one-line error of a build that must fail (and must not show the secret)."""
    result = CliRunner().invoke(cli, ["build", "-t", "attack:1", str(ctx)])
    assert result.exit_code == 1, result.output
    assert SECRET not in result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    return result.stderr.strip()


@pytest.mark.parametrize(
    "line",
    [
        "COPY link/{victim}/secret /x",  # link -> /: the context's root, not the host's
        "COPY hostdir/secret /x",  # hostdir -> the victim directory on the host
        "COPY hostdir /x/",
        "ADD hostdir/* /x/",
        "COPY link/{victim}/* /x/",
    ],
)
def test_copy_never_reads_the_host_through_a_context_symlink(
    kiln_root: Path, tmp_path: Path, victim: Path, line: str
) -> None:
    """Item 3: COPY read host files through a symlink inside the source path."""
    ctx = context(tmp_path, "FROM busybox:base\n" + line.format(victim=str(victim)) + "\n")
    (ctx / "link").symlink_to("/")
    (ctx / "hostdir").symlink_to(victim)
    message = failed_build(ctx)
    assert "not found" in message or "no source files" in message


def test_a_context_symlink_is_followed_inside_the_context(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\nCOPY link/app/main.txt /one\nCOPY alias/main.txt /two\n"
        "COPY alias /three/\nCOPY abs/app/* /four/\n",
        {"app/main.txt": "main\n"},
    )
    (ctx / "link").symlink_to("/")  # the context's root
    (ctx / "alias").symlink_to("app")
    (ctx / "abs").symlink_to("/")
    invoke("build", "-q", "-t", "links:1", str(ctx))
    rootfs = unpack(kiln_root, "1", tmp_path)
    assert (rootfs / "one").read_text() == "main\n"
    assert (rootfs / "two").read_text() == "main\n"
    assert (rootfs / "three" / "main.txt").read_text() == "main\n"  # as BuildKit follows it
    assert (rootfs / "four" / "main.txt").read_text() == "main\n"


def test_copy_from_a_stage_never_reads_the_host_through_its_symlinks(
    kiln_root: Path, tmp_path: Path, victim: Path
) -> None:
    """Item 3: ``COPY --from=STAGE /h/secret`` where the stage made ``/h`` a symlink to a
    host directory (or ``/``)."""
    for target, source in ((victim, "/h/secret"), ("/", f"/h{victim}/secret")):
        ctx = context(
            tmp_path,
            f"FROM busybox:base AS evil\nRUN ln -s {target} /h\n"
            f"FROM busybox:base\nCOPY --from=evil {source} /x\n",
        )
        assert "not found" in failed_build(ctx)


@pytest.mark.parametrize("rw", ["", ",rw"])
def test_a_bind_mount_of_a_context_symlink_stays_in_the_context(
    kiln_root: Path, tmp_path: Path, victim: Path, rw: str
) -> None:
    """Item 2: ``--mount=type=bind,source=hostdir`` with ``hostdir -> host dir`` bound the
    host directory (read-write with ``rw``)."""
    before = tree_state(victim)
    ctx = context(
        tmp_path,
        f"FROM busybox:base\nRUN --mount=type=bind,source=hostdir,target=/m{rw} "
        "cat /m/secret; touch /m/pwned\n",
    )
    (ctx / "hostdir").symlink_to(victim)
    (ctx / ".dockerignore").write_text("nothing-matches\n")
    assert "not found" in failed_build(ctx)
    (ctx / ".dockerignore").unlink()
    assert "not found" in failed_build(ctx)
    assert tree_state(victim) == before


def test_a_bind_mount_from_a_stage_symlink_stays_in_the_stage(
    kiln_root: Path, tmp_path: Path, victim: Path
) -> None:
    before = tree_state(victim)
    ctx = context(
        tmp_path,
        f"FROM busybox:base AS evil\nRUN mkdir -p /inside && ln -s {victim} /h && "
        "ln -s /inside /ok\n"
        "FROM busybox:base\n"
        "RUN --mount=type=bind,from=evil,source=/ok,target=/m,rw touch /m/fine\n"
        "RUN --mount=type=bind,from=evil,source=/h,target=/m,rw cat /m/secret; touch /m/pwned\n",
    )
    assert "not found" in failed_build(ctx)
    assert tree_state(victim) == before


def test_add_from_git_never_leaves_the_checkout(
    kiln_root: Path, tmp_path: Path, victim: Path
) -> None:
    """Item 3: ``ADD repo#ref:link`` with ``link -> host dir`` in the repository: the
    subdirectory is resolved inside the checkout (the fetch itself is tested with a git
    daemon in tests/engine/test_add_remote.py)."""
    repository = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repository)], check=True)
    (repository / "link").symlink_to(victim)
    (repository / "up").symlink_to("../../../../../../..")
    (repository / "file.txt").write_text("in the repository\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "-C", str(repository), "add", "-A"], check=True)
    subprocess.run(["git", *env, "-C", str(repository), "commit", "-qm", "x"], check=True)
    for number, subdir in enumerate(("link", f"up{victim}", "up")):
        into = tmp_path / f"checkout-{number}"
        source = GitSource(f"file://{repository}", "main", subdir)
        if subdir == "up":  # .. above the checkout stays at its root: the whole checkout
            assert checkout_git(source, "", into, keep_git_dir=False) == ""
            continue
        with pytest.raises(RemoteError, match="no directory"):
            checkout_git(source, "", into, keep_git_dir=False)
