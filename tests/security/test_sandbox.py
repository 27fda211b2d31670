"""RUN steps as an attacker writes them: escaping the sandbox, reaching the host's network,
asking for more than the user allowed. Both isolations, each tried for real."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.api import Client
from kiln.cli.main import cli
from tests.engine.support import NEEDS_RUNC, context, invoke
from tests.processes import kiln_command
from tests.registries import outward_address
from tests.security.support import kiln, one_error_line, tree_state

pytestmark = NEEDS_RUNC

SECRET = "host-secret-6f1d"
ISOLATIONS = ["oci", "chroot"]
DOCKER_CAPABILITIES = "00000000a80425fb"  # Docker's default set, as /proc shows it


def build_log(*args: str) -> str:
    """What a build that must succeed printed."""
    if args[:1] != ("--progress",):
        args = ("--progress", "plain", "--no-cache", *args)
    result = CliRunner().invoke(cli, ["build", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return result.output + result.stderr


# -- escaping the root filesystem (item 5) ----------------------------------------------------

ESCAPE = (
    'RUN perl -e \'mkdir "/x"; chroot "/x" or die "chroot: $!"; chdir ".." for 1..64; '
    'chroot "." or die "chroot: $!"; '
    'if (open(my $f, "<", "{victim}/secret")) {{ print "READ ", <$f> }} '
    'else {{ print "no host file: $!\\n" }} '
    'if (open(my $o, ">", "{victim}/pwned")) {{ print "WRO" . "TE\\n" }}\'\n'
)


@pytest.fixture
def debian(kiln_root: Path, debian_rootfs_tar: Path) -> str:
    invoke("import", str(debian_rootfs_tar), "debian:bookworm")
    return "debian:bookworm"


def _deny_pivot_root() -> None:
    """In the child before it executes kiln: pivot_root refused, as Docker's seccomp
    profile refuses it inside its containers (kiln's chroot isolation then moves the root
    filesystem over / instead)."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_void_p]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context_ = lib.seccomp_init(0x7FFF0000)
    number = lib.seccomp_syscall_resolve_name(b"pivot_root")
    lib.seccomp_rule_add_array(context_, 0x00050000 | 1, number, 0, None)
    assert lib.seccomp_load(context_) == 0


@pytest.mark.parametrize("isolation", [*ISOLATIONS, "chroot-without-pivot_root"])
def test_the_chroot_escape_leads_nowhere(
    debian: str, kiln_root: Path, tmp_path: Path, victim: Path, isolation: str
) -> None:
    """Item 5: the chroot isolation kept CAP_SYS_CHROOT and used chroot alone, so the
    classic chroot-chdir-chroot escape read and wrote the host."""
    before = tree_state(victim)
    ctx = context(tmp_path, f"FROM {debian}\n" + ESCAPE.format(victim=victim))
    argv = ["build", "--progress", "plain", "--no-cache", "--isolation",
            isolation.partition("-")[0], str(ctx)]  # fmt: skip
    if isolation == "chroot-without-pivot_root":
        result = subprocess.run(
            [kiln_command(), *argv], capture_output=True, text=True, timeout=300,
            preexec_fn=_deny_pivot_root,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        log = result.stdout + result.stderr
    else:
        log = build_log(*argv[1:])
    assert "no host file: No such file or directory" in log
    assert SECRET not in log and "WROTE" not in log
    assert tree_state(victim) == before


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_steps_keep_dockers_capabilities_and_seccomp_profile(
    kiln_root: Path, tmp_path: Path, isolation: str
) -> None:
    ctx = context(
        tmp_path,
        "FROM busybox:base\n"
        "RUN grep CapBnd /proc/self/status; unshare -U true || echo no-userns; "
        "mkdir -p /m && (mount -t tmpfs none /m || echo no-mount); "
        "mknod /mem c 1 1 && (head -c 1 /mem > /dev/null || echo no-device); "
        "echo timer_list $(wc -c < /proc/timer_list); echo done\n",
    )
    log = build_log("--isolation", isolation, str(ctx))
    assert f"CapBnd:\t{DOCKER_CAPABILITIES}" in log
    assert "no-userns" in log and "no-mount" in log and "no-device" in log
    assert "timer_list 0\n" in log  # masked
    assert "done" in log


def test_no_isolation_is_chosen_silently(kiln_root: Path, tmp_path: Path) -> None:
    """Item 5: the chroot isolation was chosen silently wherever runc was missing."""
    tools = tmp_path / "bin"  # every command of this machine's, but runc
    tools.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/usr/sbin", "/bin", "/sbin"):
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            if name != "runc" and not (tools / name).exists():
                (tools / name).symlink_to(os.path.join(directory, name))
    no_runc = {"PATH": str(tools)}
    ctx = context(tmp_path, "FROM busybox:base\nRUN true\n")
    status, output = kiln("build", "-q", str(ctx), env=no_runc)
    assert status == 1
    line = one_error_line(output)
    assert "runc is not installed" in line and "--isolation chroot" in line
    status, output = kiln("build", "-q", str(ctx), env={**no_runc, "KILN_ISOLATION": "chroot"})
    assert status == 0, output  # asked for: fine
    metadata_only = context(tmp_path, "FROM busybox:base\nLABEL a=b\n")
    assert kiln("build", "-q", str(metadata_only), env=no_runc)[0] == 0  # nothing to isolate


# -- the network (item 6) ---------------------------------------------------------------------


@pytest.fixture
def host_service() -> Iterator[int]:
    """An HTTP service on the host's loopback that answers with a secret."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(SECRET)))
            self.end_headers()
            self.wfile.write(SECRET.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def fetch(port: int) -> str:
    """A step that asks the service on every address the host's loopback may have."""
    return (
        f"RUN for host in 127.0.0.1 10.0.2.2 localhost; do "
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $host {port} || echo unreachable-$host; "
        "echo; done\n"
    )


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_step_never_reaches_the_hosts_loopback_services(
    kiln_root: Path, tmp_path: Path, host_service: int, isolation: str
) -> None:
    """Item 6: RUN shared the host's network, reaching every loopback service."""
    ctx = context(tmp_path, "FROM busybox:base\n" + fetch(host_service))
    log = build_log("--isolation", isolation, str(ctx))
    assert SECRET not in log
    assert all(f"unreachable-{host}" in log for host in ("127.0.0.1", "10.0.2.2", "localhost"))
    log = build_log("--isolation", isolation, "--network", "host", str(ctx))
    assert SECRET in log  # asked for by the user: the host's network


def test_a_step_reaches_out(kiln_root: Path, tmp_path: Path) -> None:
    """The default network has outbound access: a service on the host's own address (not
    its loopback) stands for the world outside."""
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"outside-world")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        ctx = context(
            tmp_path,
            "FROM busybox:base\nRUN printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
            f"nc -w 3 {address} {port}\n",
        )
        assert "outside-world" in build_log(str(ctx))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("line", "entitlement"),
    [("RUN --network=host true", "network.host"), ("RUN --security=insecure true",
                                                   "security.insecure")],
)  # fmt: skip
def test_a_dockerfile_gets_no_more_than_the_user_allows(
    kiln_root: Path, tmp_path: Path, line: str, entitlement: str
) -> None:
    ctx = context(tmp_path, f"FROM busybox:base\n{line}\n")
    status, output = kiln("build", "-q", str(ctx))
    assert status == 1
    assert f"Dockerfile:2: RUN {line.split()[1]} is not allowed (allow it with --allow " \
           f"{entitlement})" in one_error_line(output)  # fmt: skip
    assert kiln("build", "-q", "--allow", entitlement, str(ctx))[0] == 0


def test_insecure_steps_get_every_capability_when_allowed(kiln_root: Path, tmp_path: Path) -> None:
    ctx = context(
        tmp_path, "FROM busybox:base\nRUN --security=insecure grep CapBnd /proc/self/status\n"
    )
    log = build_log("--allow", "security.insecure", str(ctx))
    assert f"CapBnd:\t{DOCKER_CAPABILITIES}" not in log
    assert "CapBnd:\t000001ff" in log or "CapBnd:\t0000003f" in log


def test_docker_py_bridge_is_a_private_network(
    kiln_root: Path, tmp_path: Path, host_service: int
) -> None:
    """Item 6: docker-py's ``network_mode="bridge"`` was silently mapped to host."""
    ctx = context(tmp_path, "FROM busybox:base\n" + fetch(host_service))
    with Client() as client:
        for mode in ("bridge", "default", None):
            _, logs = client.images.build(path=str(ctx), network_mode=mode, nocache=True)
            text = "".join(entry.get("stream", "") for entry in logs)
            assert "unreachable-127.0.0.1" in text and SECRET not in text
        _, logs = client.images.build(path=str(ctx), network_mode="host", nocache=True)
        assert SECRET in "".join(entry.get("stream", "") for entry in logs)
