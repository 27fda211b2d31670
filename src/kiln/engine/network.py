"""The network RUN steps see: a private one by default, the host's or none on request.

``default`` is a network namespace of the build's own, reaching out through slirp4netns
(a user-space TCP/IP stack: the namespace's tap device on one side, ordinary sockets of
kiln's on the other), as BuildKit's and rootless Docker's default network does. A step
gets 10.0.2.100, its DNS at 10.0.2.3 and a route out through 10.0.2.2, and nothing of the
host's: not its loopback services (``--disable-host-loopback``), not its interfaces, not
its packets. ``host`` shares the host's network stack; ``none`` is an empty namespace.

One namespace serves every RUN step of a build (they are one Dockerfile's), made when the
first step that needs it runs and removed when the build ends. It is bound to a file in
the build's workspace, so a killed build's namespace is unmounted by the next command's
reclaim, and slirp4netns ends with kiln: it holds the read end of a pipe only kiln writes.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from kiln.engine.overlay import MountError, unmount
from kiln.errors import KilnError

DEFAULT, HOST, NONE = "default", "host", "none"
MODES = (DEFAULT, HOST, NONE)
# What a step of the default network resolves names with: slirp4netns's DNS forwarder.
RESOLV_CONF = "nameserver 10.0.2.3\n"
_READY_TIMEOUT = 10.0


class NetworkError(KilnError):
    """A network for RUN steps that cannot be had."""


class PrivateNetwork:
    """The build's own network namespace, made on first use (thread-safe: parallel stages
    share it)."""

    def __init__(self, directory: Path, notice: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self._notice = notice or (lambda line: print(line, file=sys.stderr))
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._slirp: subprocess.Popen[bytes] | None = None
        self._exit: int = -1

    def namespace(self) -> Path:
        """The file the namespace is bound to, for runc's ``path`` and for ``setns``."""
        with self._lock:
            if self._path is None:
                self._path = self._start()
            return self._path

    def _start(self) -> Path:
        for tool in ("unshare", "slirp4netns"):
            if shutil.which(tool) is None:
                raise NetworkError(
                    f"RUN steps get a network of their own through slirp4netns, and {tool} "
                    "is not installed (apt-get install slirp4netns); or choose --network "
                    "host (the host's network) or --network none"
                )
        path = self.directory / "netns"
        path.touch()
        made = subprocess.run(["unshare", f"--net={path}", "true"], capture_output=True, text=True)
        if made.returncode != 0:
            raise NetworkError(f"cannot make a network namespace: {made.stderr.strip()}")
        why = self._slirp4netns(path, confined=True)
        if why and "seccomp" in why:
            # Where slirp4netns cannot load its own seccomp filter it runs without one, and
            # kiln says so.
            self._notice(f"warning: slirp4netns cannot confine itself with seccomp here "
                         f"({why}): it runs without its filter")  # fmt: skip
            why = self._slirp4netns(path, confined=False)
        if why:
            with contextlib.suppress(MountError):
                unmount(path)
            raise NetworkError(f"slirp4netns did not set up the build's network: {why}")
        return path

    def _slirp4netns(self, path: Path, *, confined: bool) -> str:
        """Start slirp4netns on the namespace at ``path``; "" once it is ready, else why
        not (and it is stopped). Its seccomp filter confines it; its ``--enable-sandbox``
        (a mount namespace it pivots into) is not used: while it sets that up, Docker's
        chrooted untar on the same host fails now and then ("Error after fallback to
        chroot"), which kiln must not cause."""
        ready_read, ready_write = os.pipe()
        exit_read, self._exit = os.pipe()
        sandbox = ["--enable-seccomp"] if confined else []
        try:
            self._slirp = subprocess.Popen(
                ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                 *sandbox, "--netns-type=path", f"--ready-fd={ready_write}",
                 f"--exit-fd={exit_read}", str(path), "tap0"],
                pass_fds=(ready_write, exit_read), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        finally:
            os.close(ready_write)
            os.close(exit_read)
        try:
            ready, _, _ = select.select([ready_read], [], [], _READY_TIMEOUT)
            if ready and os.read(ready_read, 1) == b"1":
                return ""
        finally:
            os.close(ready_read)
        why = self._failure()
        self._stop()
        return why

    def _failure(self) -> str:
        """The last lines slirp4netns printed before it gave up."""
        assert self._slirp is not None
        try:
            self._slirp.wait(timeout=5)  # it closed the ready pipe: it is on its way out
        except subprocess.TimeoutExpired:
            return "it did not answer"
        assert self._slirp.stderr is not None
        lines = self._slirp.stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-4:]) if lines else f"it exited with {self._slirp.returncode}"

    def _stop(self) -> None:
        if self._exit >= 0:
            os.close(self._exit)  # its cue to end, should kiln die before it
            self._exit = -1
        if self._slirp is not None:
            slirp, self._slirp = self._slirp, None
            slirp.kill()  # it keeps no state: at once, rather than when it next looks
            if slirp.stderr is not None:
                slirp.stderr.close()
            # Its end takes the kernel tens of milliseconds (the tap device goes): reaped
            # aside, so that the build need not wait for it.
            threading.Thread(target=slirp.wait, daemon=True).start()

    def close(self) -> None:
        """End slirp4netns and unbind the namespace (it goes once nothing is in it)."""
        self._stop()
        if self._path is not None:
            with contextlib.suppress(MountError):
                unmount(self._path)
            self._path = None
