"""The image config a stage ends with: what its metadata instructions leave behind.

Only instructions that change the config count here (ENV, LABEL, USER, WORKDIR, EXPOSE,
VOLUME, STOPSIGNAL, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER); the
filesystem is the engine's business. The rules are those of BuildKit's dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kiln.dockerfile.instructions import (
    Cmd,
    Entrypoint,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from kiln.dockerfile.plan import SCRATCH, BaseImageConfig, StagePlan, join_workdir
from kiln.errors import DockerfileError

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class HealthConfig:
    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config, as ``docker image inspect`` shows it."""

    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    shell: tuple[str, ...] = ()
    healthcheck: HealthConfig | None = None
    onbuild: tuple[str, ...] = ()
    author: str = ""


def stage_config(
    stage: StagePlan, base: BaseImageConfig | ImageConfig | None = None
) -> ImageConfig:
    """The config ``stage`` produces on top of its base image's (or base stage's) config.

    ``base`` is the parent stage's ``ImageConfig`` for a stage built on another stage, the
    image's config for an external base, and None for scratch.
    """
    if isinstance(base, ImageConfig):
        config = base
    else:
        base = base or SCRATCH
        config = ImageConfig(user=base.user, working_dir=base.working_dir)
    config = replace(config, env=tuple(f"{k}={v}" for k, v in stage.env))
    cmd_set = False
    for step in stage.steps:
        config, cmd_set = apply_instruction(config, step.instruction, cmd_set)
    return config


def apply_instruction(
    config: ImageConfig, i: Instruction, cmd_set: bool
) -> tuple[ImageConfig, bool]:
    """One instruction's effect; ``cmd_set`` is whether this stage has set CMD yet."""
    if isinstance(i, Label):
        return replace(
            config, labels={**config.labels, **{p.key: p.value for p in i.pairs}}
        ), cmd_set
    if isinstance(i, User):
        return replace(config, user=i.user), cmd_set
    if isinstance(i, Expose):
        ports = sorted({*config.exposed_ports, *(p for spec in i.ports for p in _ports(i, spec))})
        return replace(config, exposed_ports=tuple(ports)), cmd_set
    if isinstance(i, Volume):
        return replace(config, volumes=tuple(sorted({*config.volumes, *i.volumes}))), cmd_set
    if isinstance(i, StopSignal):
        return replace(config, stop_signal=i.signal), cmd_set
    if isinstance(i, Shell):
        return replace(config, shell=i.shell), cmd_set
    if isinstance(i, Cmd):
        return replace(config, cmd=_command(config, i.command, i.shell_form)), True
    if isinstance(i, Entrypoint):
        entrypoint = _command(config, i.command, i.shell_form)
        # A new ENTRYPOINT drops an inherited CMD, unless this stage set one already.
        return replace(config, entrypoint=entrypoint, cmd=config.cmd if cmd_set else None), cmd_set
    if isinstance(i, Healthcheck):
        health = HealthConfig(
            i.test, i.interval, i.timeout, i.start_period, i.start_interval, i.retries
        )
        return replace(config, healthcheck=health), cmd_set
    if isinstance(i, Onbuild):
        return replace(config, onbuild=(*config.onbuild, i.expression)), cmd_set
    if isinstance(i, Maintainer):
        return replace(config, author=i.maintainer), cmd_set
    if isinstance(i, Workdir):
        return replace(config, working_dir=join_workdir(config.working_dir or "/", i.path)), cmd_set
    return config, cmd_set


def to_oci(config: ImageConfig) -> dict[str, object]:
    """The ``config`` object of an OCI image config (Docker's field names)."""
    data: dict[str, object] = {}
    if config.env:
        data["Env"] = list(config.env)
    if config.user:
        data["User"] = config.user
    if config.working_dir:
        data["WorkingDir"] = config.working_dir
    if config.labels:
        data["Labels"] = dict(config.labels)
    if config.exposed_ports:
        data["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    if config.volumes:
        data["Volumes"] = {volume: {} for volume in config.volumes}
    if config.stop_signal:
        data["StopSignal"] = config.stop_signal
    if config.cmd is not None:
        data["Cmd"] = list(config.cmd)
    if config.entrypoint is not None:
        data["Entrypoint"] = list(config.entrypoint)
    if config.shell:
        data["Shell"] = list(config.shell)
    if config.onbuild:
        data["OnBuild"] = list(config.onbuild)
    if config.healthcheck is not None:
        h = config.healthcheck
        health: dict[str, object] = {"Test": list(h.test)}
        durations = {
            "Interval": h.interval,
            "Timeout": h.timeout,
            "StartPeriod": h.start_period,
            "StartInterval": h.start_interval,
            "Retries": h.retries,
        }
        for key, value in durations.items():
            if value:
                health[key] = value
        data["Healthcheck"] = health
    return data


def from_oci(data: dict[str, object]) -> ImageConfig:
    """An image's ``config`` object back as an ``ImageConfig`` (what a stage starts from)."""

    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    def optional(key: str) -> tuple[str, ...] | None:
        return strings(key) if isinstance(data.get(key), list) else None

    labels = data.get("Labels")
    ports = data.get("ExposedPorts")
    volumes = data.get("Volumes")
    health = data.get("Healthcheck")
    return ImageConfig(
        env=strings("Env"),
        user=str(data.get("User") or ""),
        working_dir=str(data.get("WorkingDir") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        exposed_ports=tuple(sorted(ports)) if isinstance(ports, dict) else (),
        volumes=tuple(sorted(volumes)) if isinstance(volumes, dict) else (),
        stop_signal=str(data.get("StopSignal") or ""),
        cmd=optional("Cmd"),
        entrypoint=optional("Entrypoint"),
        shell=strings("Shell"),
        healthcheck=HealthConfig(
            tuple(health.get("Test") or ()),
            int(health.get("Interval") or 0),
            int(health.get("Timeout") or 0),
            int(health.get("StartPeriod") or 0),
            int(health.get("StartInterval") or 0),
            int(health.get("Retries") or 0),
        )
        if isinstance(health, dict)
        else None,
        onbuild=strings("OnBuild"),
    )


def _command(config: ImageConfig, command: tuple[str, ...], shell_form: bool) -> tuple[str, ...]:
    if shell_form and command:
        return (*(config.shell or DEFAULT_SHELL), *command)
    return command


def _ports(instruction: Instruction, spec: str) -> list[str]:
    """``80``, ``80/udp``, ``8000-8002``, ``ip:host:container`` → ``["80/tcp", ...]``."""
    port, _, proto = spec.rpartition(":")[2].partition("/")
    proto = (proto or "tcp").lower()
    low, _, high = port.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise DockerfileError(
            f"invalid containerPort: {port}",
            line=instruction.location.start_line,
            end_line=instruction.location.end_line,
        )
    return [f"{n}/{proto}" for n in range(int(low), int(high or low) + 1)]
