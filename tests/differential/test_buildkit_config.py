"""kiln's build semantics against a real BuildKit: the image config each Dockerfile produces.

Every case builds FROM scratch (no registry needed) with Debian's Docker engine and BuildKit,
then compares what ``docker image inspect`` reports with what kiln's plan says the config
will be: environment (ARG scoping, ENV over ARG, build args, global and predefined ARGs),
working directory, user, labels, ports, volumes, stop signal, commands and health check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kiln.dockerfile import BuildOptions, Platform, parse_dockerfile, plan_build
from kiln.dockerfile.config import ImageConfig, stage_config
from tests.engines import DockerEngine

pytestmark = pytest.mark.slow

CASES: dict[str, tuple[str, dict[str, str], str]] = {
    "arg-scoping": (
        "ARG G=global\nARG UNUSED_IN_STAGE=x\nFROM scratch\nARG G\nARG D=def-$G\n"
        'ENV E1=$D E2="${G:-none}" E3=${UNUSED_IN_STAGE:-unset}\n',
        {}, "",
    ),
    "build-arg-overrides-default-and-global": (
        "ARG G=global\nFROM scratch\nARG G\nARG D=default\nENV G=$G D=$D\n",
        {"G": "cli-g", "D": "cli-d"}, "",
    ),
    "env-after-arg-wins": (
        "FROM scratch\nARG V=from-arg\nENV V=from-env\nENV W=$V\n", {"V": "cli"}, "",
    ),
    "env-pairs-see-values-from-before": (
        "FROM scratch\nENV A=1\nENV A=2 B=$A\nENV C=${A}${B}\n", {}, "",
    ),
    "legacy-env-and-quotes": (
        "FROM scratch\nENV ONE two three\nENV Q=\"a b\" R='$Q' S=\\$Q T=\"$Q\"\n", {}, "",
    ),
    # Debian's engine predates the #, %, / modifiers; the conformance tables cover them.
    "modifiers": (
        "FROM scratch\nARG P=/usr/lib\nARG EMPTY=\n"
        "ENV ALT=${NOPE:-alt} SET=${P:+set} UNSET=${NOPE:+set} E1=${EMPTY:-empty} E2=${EMPTY:+x}\n",
        {}, "",
    ),
    "predefined-platform-args": (
        "FROM scratch\nARG TARGETOS\nARG TARGETARCH\nARG BUILDPLATFORM\n"
        "ENV T=$TARGETOS/$TARGETARCH B=$BUILDPLATFORM NOT_DECLARED=${TARGETVARIANT:-none}\n",
        {}, "",
    ),
    "child-stage-inherits-env-and-args": (
        "ARG G=g\nFROM scratch AS base\nARG G\nARG L=local\nENV FROM_BASE=$L\nWORKDIR /app\n"
        "LABEL stage=base\nFROM base AS child\nENV SEEN=$G-$L\nWORKDIR sub\nLABEL stage=child\n",
        {}, "",
    ),
    "absolute-workdir-kept-as-written": (
        "FROM scratch AS slash\nWORKDIR /app/\nFROM slash\nWORKDIR /x//y/\nWORKDIR ../z/\n",
        {}, "",
    ),
    "trailing-slash-workdir": ("FROM scratch\nWORKDIR /app/\n", {}, ""),
    "target-selects-stage": (
        "FROM scratch AS one\nENV STAGE=one\nFROM scratch AS two\nENV STAGE=two\n", {}, "one",
    ),
    "workdir-and-user": (
        "FROM scratch\nENV HOME_DIR=/home/app U=1000\nWORKDIR $HOME_DIR\nWORKDIR ../lib/./x\n"
        "USER ${U}:${U}\n",
        {}, "",
    ),
    "metadata": (
        "FROM scratch\nARG PORT=8080\nEXPOSE $PORT 53/udp 9000-9002/TCP\n"
        'VOLUME /data ["/logs", "/cache"]\nSTOPSIGNAL SIGTERM\n'
        'LABEL a=1 "b c"="d e" version=${PORT}\nMAINTAINER someone\n',
        {}, "",
    ),
    "commands-and-shell": (
        'FROM scratch\nCMD echo hello\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\n'
        'ENTRYPOINT ["/app"]\nCMD ["--flag"]\nONBUILD RUN make\n',
        {}, "",
    ),
    "entrypoint-resets-inherited-cmd": (
        'FROM scratch AS base\nCMD ["base-cmd"]\nFROM base\nENTRYPOINT /run.sh arg\n', {}, "",
    ),
    "healthcheck": (
        "FROM scratch AS base\nHEALTHCHECK --interval=5s --timeout=3s --start-period=1m30s "
        "--retries=4 CMD curl -f http://localhost/ || exit 1\n"
        "FROM base\nHEALTHCHECK NONE\n",
        {}, "base",
    ),
    "escape-directive": (
        "# escape=`\nFROM scratch\nENV WIN=C:\\path\\to `\n    NEXT=`$NOT_EXPANDED\n", {}, "",
    ),
}  # fmt: skip


def docker_config(engine: DockerEngine, context: Path, args: dict[str, str], target: str) -> Any:
    tag = f"kiln-diff-{context.name}"
    command = ["build", "-q", "-t", tag, "--platform", "linux/amd64"]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    if target:
        command += ["--target", target]
    engine.run(*command, str(context), env={"DOCKER_BUILDKIT": "1"})
    return json.loads(engine.run("image", "inspect", tag))[0]["Config"]


def kiln_config(text: str, args: dict[str, str], target: str) -> ImageConfig:
    options = BuildOptions(build_args=args, target=target, platform=Platform("linux", "amd64"))
    plan = plan_build(parse_dockerfile(text), options)
    configs: dict[int, ImageConfig] = {}
    for stage in plan.stages:
        parent = configs.get(stage.base_stage) if stage.base_stage is not None else None
        configs[stage.stage.index] = stage_config(stage, parent)
    return configs[plan.target]


def as_docker_shows_it(config: ImageConfig) -> dict[str, Any]:
    """kiln's config in the shape of ``docker image inspect``'s ``Config``."""
    health = None
    if config.healthcheck is not None:
        h = config.healthcheck
        health = {"Test": list(h.test)}
        for key, value in (("Interval", h.interval), ("Timeout", h.timeout),
                           ("StartPeriod", h.start_period), ("Retries", h.retries)):  # fmt: skip
            if value:
                health[key] = value
    return {
        "Env": list(config.env),
        "User": config.user,
        "WorkingDir": config.working_dir,
        "Labels": config.labels or None,
        "ExposedPorts": {port: {} for port in config.exposed_ports} or None,
        "Volumes": {volume: {} for volume in config.volumes} or None,
        "StopSignal": config.stop_signal or None,
        "Cmd": list(config.cmd) if config.cmd is not None else None,
        "Entrypoint": list(config.entrypoint) if config.entrypoint is not None else None,
        "Shell": list(config.shell) or None,
        "Healthcheck": health,
        "OnBuild": list(config.onbuild) or None,
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_matches_buildkit(docker_engine: DockerEngine, tmp_path: Path, case: str) -> None:
    text, args, target = CASES[case]
    context = tmp_path / case
    context.mkdir()
    (context / "Dockerfile").write_text(text)
    theirs = docker_config(docker_engine, context, args, target)
    ours = as_docker_shows_it(kiln_config(text, args, target))
    assert {key: theirs.get(key) for key in ours} == ours
