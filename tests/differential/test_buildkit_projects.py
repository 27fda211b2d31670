"""kiln build against BuildKit on Dockerfiles shaped like real projects' (issue 14).

A Python service installed from wheels in a multi-stage build (bind mounts from a builder
stage, a hash-checked lock file, cache mounts), relative mount targets under a WORKDIR,
``WORKDIR /app/``, an ONBUILD base image and an entrypoint script run as a service user.
Each is built by kiln and by BuildKit in the private dockerd and compared as
``test_buildkit_build`` compares: every path by type, mode, owner, size, content and link
target, the config, the history. The Python cases build FROM the Debian base the buildroot
tests cache (busybox has no python); the wheels are made here, offline and byte for byte the
same on every run, so the lock file can pin their hashes.

One difference is a version's, not kiln's, and is checked rather than hidden: BuildKit
before v0.11 (moby/buildkit#3307, #3314; Debian's docker.io 20.10 carries 0.8) leaves an
empty directory at a mount target that did not exist before the RUN, and at each directory
it made above one; current BuildKit removes them, and so does kiln. Each case lists those
paths (``buildkit08_stubs``): on such an engine they must be exactly empty directories in
BuildKit's image, absent from kiln's, and are then left out of the comparison.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.buildroot import base_tar
from tests.differential.test_buildkit_build import (
    Entry,
    _context,
    _docker_config,
    _from_tar,
    _history,
    _kiln,
    _unpack,
)
from tests.engines import DockerEngine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed"),
]

# test_buildkit_build's keys, and the metadata these Dockerfiles set besides.
CONFIG_KEYS = (
    "Env", "User", "WorkingDir", "Cmd", "Entrypoint", "Labels", "Shell", "OnBuild",
    "Healthcheck", "ExposedPorts", "Volumes", "StopSignal",
)  # fmt: skip


def _wheel(
    name: str, version: str, modules: dict[str, str], *, requires: str = "", scripts: str = ""
) -> dict[str, bytes]:
    """The files of a pure-Python wheel: ``modules``, and a dist-info whose RECORD lists them."""
    info = f"{name}-{version}.dist-info"
    files = {path: text.encode() for path, text in modules.items()}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: kiln-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{scripts}".encode()
    files[f"{info}/RECORD"] = "".join(
        [f"{path},sha256={_record_hash(data)},{len(data)}\n" for path, data in files.items()]
        + [f"{info}/RECORD,,\n"]
    ).encode()
    return files


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _zipped(files: dict[str, bytes]) -> bytes:
    """A wheel file: fixed timestamps and modes, so the same bytes (and hash) every run."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            entry = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data, zipfile.ZIP_DEFLATED)
    return raw.getvalue()


SHOUT = _wheel("shout", "0.3", {"shout/__init__.py": "def shout(s):\n    return s.upper()\n"})
GREETING = _wheel(
    "greeting", "1.0",
    {"greeting/__init__.py": "from shout import shout\n\n\ndef greet(name):\n"
                             "    return shout(f'hello {name}')\n",
     "greeting/__main__.py": "import sys\n\nfrom greeting import greet\n\n\ndef main():\n"
                             "    print(greet(sys.argv[-1]))\n\n\nif __name__ == '__main__':\n"
                             "    main()\n"},
    requires="Requires-Dist: shout (==0.3)\n",
    scripts="greet = greeting.__main__:main\n",
)  # fmt: skip
WHEELS = {
    "shout-0.3-py3-none-any.whl": _zipped(SHOUT),
    "greeting-1.0-py3-none-any.whl": _zipped(GREETING),
}
LOCK = "".join(
    f"{name.split('-')[0]}=={name.split('-')[1]} \\\n"
    f"    --hash=sha256:{hashlib.sha256(data).hexdigest()}\n"
    for name, data in sorted(WHEELS.items())
)

# ensurepip byte-compiles pip into the venv, and a .pyc's header holds its source's mtime
# (when pip was unpacked): with SOURCE_DATE_EPOCH set, py_compile writes hash-checked .pyc
# files instead, the same in both builds. The installs below do not compile (--no-compile),
# keep pip's cache on a cache mount and never ask PyPI for pip's version.
VENV = "SOURCE_DATE_EPOCH=1 python3 -m venv"
PIP_ENV = "PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1"

ENTRYPOINT_SCRIPT = """\
#!/bin/sh
set -e
if [ "$1" = serve ]; then
    shift
    exec python -m greeting "$@"
fi
exec "$@"
"""

CASES: dict[str, dict[str, Any]] = {
    # The builder zips one wheel from its sources and holds both: the final stage binds
    # them at /wheels, which it does not have, with pip's cache on a cache mount.
    "pip-wheels-bound-from-builder": {
        "dockerfile": "FROM debian:base AS builder\nWORKDIR /src\nCOPY src/ .\n"
        "RUN mkdir /wheels && python3 -m zipfile -c /wheels/shout-0.3-py3-none-any.whl"
        " shout shout-0.3.dist-info\nCOPY greeting-1.0-py3-none-any.whl /wheels/\n"
        f"FROM debian:base\nENV {PIP_ENV}\nRUN {VENV} /venv\n"
        "RUN --mount=type=cache,target=/root/.cache/pip"
        " --mount=type=bind,from=builder,source=/wheels,target=/wheels"
        " /venv/bin/pip install --no-index --find-links /wheels --no-compile greeting\n"
        'ENV PATH=/venv/bin:$PATH\nCMD ["greet", "world"]\n',
        "files": {f"src/{path}": data.decode() for path, data in SHOUT.items()},
        "binary": {"greeting-1.0-py3-none-any.whl": WHEELS["greeting-1.0-py3-none-any.whl"]},
        "mount_targets": ["wheels", "root/.cache/pip", "root/.cache"],
        "buildkit08_stubs": ["wheels", "root/.cache", "root/.cache/pip"],
    },
    # A service: hash-checked lock file and cache bound at relative targets in WORKDIR
    # ${APP_HOME}/ (kept as /app/), wheels from a stage, an entrypoint script, a user.
    "pip-lock-file-service": {
        "dockerfile": "FROM debian:base AS wheels\nCOPY *.whl /wheelhouse/\n"
        "FROM debian:base\nARG APP_HOME=/app\n"
        f"ENV {PIP_ENV} VIRTUAL_ENV=/opt/venv PIP_CACHE_DIR=$APP_HOME/.cache/pip\n"
        "RUN groupadd --system --gid 999 app && useradd --system --uid 999 --gid app"
        " --home-dir $APP_HOME --no-create-home app\n"
        f"RUN {VENV} $VIRTUAL_ENV\nENV PATH=$VIRTUAL_ENV/bin:$PATH\nWORKDIR ${{APP_HOME}}/\n"
        "RUN --mount=type=bind,source=requirements.lock,target=requirements.lock"
        " --mount=type=bind,from=wheels,source=/wheelhouse,target=/wheels"
        " --mount=type=cache,target=.cache"
        " pip install --no-index --find-links /wheels --require-hashes --no-compile"
        " -r requirements.lock && ls -A > /mounts-seen-in-app.txt\n"
        "COPY --chown=app:app app/ ./\nCOPY docker-entrypoint.sh /usr/local/bin/\n"
        "RUN chmod +x /usr/local/bin/docker-entrypoint.sh"
        " && mkdir -p $APP_HOME/data /var/log/app && chown -R app:app $APP_HOME/data /var/log/app\n"
        "USER app\nEXPOSE 8000\n"
        'HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-m", "greeting", "health"]\n'
        'LABEL org.opencontainers.image.title="greeting service"'
        " org.opencontainers.image.version=1.0\n"
        'STOPSIGNAL SIGINT\nENTRYPOINT ["docker-entrypoint.sh"]\nCMD ["serve", "--port", "8000"]\n',
        "files": {"requirements.lock": LOCK, "docker-entrypoint.sh": ENTRYPOINT_SCRIPT,
                  "app/settings.toml": "port = 8000\n", "app/static/index.html": "<h1>hi</h1>\n"},
        "binary": WHEELS,
        "mount_targets": ["app/requirements.lock", "app/.cache", "wheels"],
        "buildkit08_stubs": ["app/.cache", "wheels"],
    },
    # WORKDIR /app/ keeps its slash; relative mounts (a bind, a tmpfs under new parents) and
    # relative WORKDIRs after it are resolved against it.
    "workdir-trailing-slash": {
        "dockerfile": "FROM busybox:base\nWORKDIR /app/\nCOPY conf/ conf.d/\n"
        "RUN --mount=type=bind,source=templates,target=templates"
        " --mount=type=tmpfs,target=/var/cache/render"
        " cat templates/*.tmpl > /var/cache/render/all && cp /var/cache/render/all rendered.txt"
        " && pwd > /pwd-app.txt\nWORKDIR src\nRUN pwd > /pwd-src.txt\nWORKDIR ../data/\n"
        "COPY seed.txt .\nRUN pwd > /pwd-data.txt\n",
        "files": {"conf/app.conf": "debug = false\n", "templates/a.tmpl": "A\n",
                  "templates/b.tmpl": "B\n", "seed.txt": "seed\n"},
        "mount_targets": ["app/templates", "var/cache/render", "var/cache"],
        "buildkit08_stubs": ["app/templates", "var/cache", "var/cache/render"],
    },
    # A stage's ONBUILD triggers (ARG, COPY, RUN) run in the child built FROM it; the
    # child's own ONBUILD stays in its config.
    "onbuild-base-image": {
        "dockerfile": "FROM busybox:base AS app-base\nWORKDIR /usr/src/app\n"
        "ONBUILD ARG BUILD_ENV=production\nONBUILD COPY requirements.txt ./\n"
        "ONBUILD RUN sort requirements.txt > requirements.sorted\nONBUILD COPY . .\n"
        'ONBUILD RUN echo "built for $BUILD_ENV" > build-info.txt\n'
        'CMD ["cat", "build-info.txt"]\n'
        "FROM app-base\nLABEL stage=child\nONBUILD RUN echo grandchild > /grandchild.txt\n",
        "files": {"requirements.txt": "zlib\nattrs\n", "main.sh": "echo main\n"},
        "ignore": "Dockerfile\n.dockerignore\n",
        "args": {"BUILD_ENV": "test"},
    },
    # A service user with chown'd directories, ARG and ENV in paths, an entrypoint script
    # COPY'd --chown, shell-form ENTRYPOINT and CMD, and every metadata instruction.
    "entrypoint-script-as-service-user": {
        "dockerfile": "FROM busybox:base\nARG APP_USER=svc\nARG APP_UID=10001\n"
        "ENV APP_HOME=/srv/$APP_USER DATA_DIR=/var/lib/$APP_USER\n"
        'RUN echo "$APP_USER:x:$APP_UID:" >> /etc/group'
        ' && echo "$APP_USER:x:$APP_UID:$APP_UID::$APP_HOME:/bin/false" >> /etc/passwd'
        " && mkdir -p $APP_HOME $DATA_DIR && chown -R $APP_USER:$APP_USER $APP_HOME $DATA_DIR"
        " && chmod 0750 $DATA_DIR\n"
        "COPY --chown=${APP_USER}:${APP_USER} entrypoint.sh $APP_HOME/bin/\n"
        "RUN chmod 0755 $APP_HOME/bin/entrypoint.sh\nUSER $APP_USER\nWORKDIR $APP_HOME\n"
        'RUN echo "written by $(id -un)" > $DATA_DIR/owner.txt && id > id.txt\n'
        "VOLUME $DATA_DIR\nEXPOSE 8080/tcp 8443\n"
        "HEALTHCHECK --interval=10s --retries=5 CMD wget -q -O- http://localhost:8080/ || exit 1\n"
        'LABEL maintainer="ops@example.com" org.opencontainers.image.source=https://example.com/svc\n'
        "STOPSIGNAL SIGQUIT\nENTRYPOINT exec $APP_HOME/bin/entrypoint.sh\nCMD serve --port 8080\n",
        "files": {"entrypoint.sh": '#!/bin/sh\nexec httpd -f -p 8080 -h "$APP_HOME"\n'},
        "args": {"APP_UID": "10002"},
    },
}  # fmt: skip


@dataclass(frozen=True)
class Engines:
    """kiln's store and the private dockerd, both holding busybox:base and debian:base."""

    kiln_root: Path
    docker: DockerEngine
    leaves_mount_stubs: bool  # the engine's BuildKit is older than v0.11


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path, docker_engine: DockerEngine
) -> Engines:
    """Both bases imported into kiln once, saved, and loaded into the engine."""
    root = tmp_path_factory.mktemp("kiln-root")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KILN_ROOT", str(root))
        for rootfs, tag in ((busybox_rootfs, "busybox:base"), (base_tar(), "debian:base")):
            _kiln("import", str(rootfs), tag)
            archive = root.parent / f"{tag.replace(':', '-')}.tar"
            _kiln("save", "-o", str(archive), tag)
            docker_engine.run("load", "-i", str(archive))
            archive.unlink()
    # Docker 23 is the first engine with BuildKit v0.11; 20.10's is 0.8.
    version = docker_engine.run("version", "--format", "{{.Server.Version}}").strip()
    return Engines(root, docker_engine, int(version.split(".")[0]) < 23)


@pytest.mark.parametrize("name", sorted(CASES))
def test_project_builds_as_buildkit_builds_it(
    engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("KILN_ROOT", str(engines.kiln_root))
    docker = engines.docker
    case = CASES[name]
    context = _context(tmp_path, name, case)
    options = [f"--build-arg={k}={v}" for k, v in case.get("args", {}).items()]
    tag = f"project-{name}:1"

    docker.run(
        "build", "-q", "--network=host", "-t", tag, *options, str(context),
        env={"DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    container = docker.run("create", tag, "/bin/true").strip()
    theirs_fs = _from_tar(docker.run_bytes("export", container))
    docker.run("rm", container)
    theirs = json.loads(docker.run("image", "inspect", tag))[0]["Config"]

    _kiln("build", "-q", "-t", tag, *options, str(context))
    ours_fs = _unpack(engines.kiln_root, tag, tmp_path / "bundle")
    ours = json.loads(_kiln("inspect", tag))[0]

    stubs = case.get("buildkit08_stubs", [])
    left = sorted(e[0] for e in ours_fs if e[0] in {*case.get("mount_targets", []), *stubs})
    assert left == [], "kiln left mount targets in the image"
    if engines.leaves_mount_stubs:
        theirs_fs = _without_stubs(theirs_fs, stubs)
    assert sorted(ours_fs - theirs_fs) == sorted(theirs_fs - ours_fs) == []
    for key in CONFIG_KEYS:
        assert (key, ours["Config"].get(key) or None) == (key, theirs.get(key) or None)
    our_config = json.loads((engines.kiln_root / "blobs" / "sha256" / ours["Id"][7:]).read_text())
    assert _history(our_config) == _history(_docker_config(docker, tag))


def _without_stubs(entries: set[Entry], stubs: list[str]) -> set[Entry]:
    """BuildKit 0.8's image without the mount stubs it leaves: each of ``stubs`` must be a
    directory holding nothing but other stubs."""
    for stub in stubs:
        kinds = [chr(e[1]) for e in entries if e[0] == stub]
        assert kinds == ["d"], f"BuildKit left no stub directory at {stub}"
        inside = {e[0] for e in entries if e[0].startswith(stub + "/")} - set(stubs)
        assert inside == set(), f"BuildKit's stub {stub} is not empty"
    return {e for e in entries if e[0] not in stubs}
