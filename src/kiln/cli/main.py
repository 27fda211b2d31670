"""The ``kiln`` command: a thin shell over the library.

Every ``KilnError`` becomes one line on stderr and exit status 1, and so do the failures of
the machine itself (a full disk, an unreadable file, a damaged store database); nothing else
is caught, so a traceback always means a bug in kiln.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kiln import __version__
from kiln.cli.progress import MODES, printer
from kiln.cli.workflow import run_workflow, workflow_group
from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.store import Store, StoredImage

if TYPE_CHECKING:
    from kiln.dockerfile.document import Dockerfile
    from kiln.engine.executor import Volume
    from kiln.registry import RegistryClient

# Commands import the rest of kiln when they run: `kiln images` need not load the Dockerfile
# front end, and every command starts faster.


class Terminated(BaseException):  # like KeyboardInterrupt: no ``except Exception`` takes it
    """SIGTERM, raised where kiln is, so that mounts, containers and partial files are
    cleaned up on the way out, as for Ctrl-C (Python's default would just stop)."""


class _KilnGroup(click.Group):
    """Reports a ``KilnError`` from any command as ``error: ...`` and exit status 1 (143
    after SIGTERM)."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        try:
            return super().invoke(ctx)
        except (KilnError, Terminated) as err:
            _report(str(err))
            sys.exit(143 if isinstance(err, Terminated) else 1)
        except OSError as err:  # the machine's, not kiln's: ENOSPC, EACCES, EIO...
            where = f": {err.filename}" if err.filename else ""
            _report(f"{(err.strerror or str(err)).lower()}{where}")
            sys.exit(1)
        except sqlite3.Error as err:
            _report(f"kiln's store database: {err}")
            sys.exit(1)


def _report(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    stderr.print(f"[bold red]error:[/] {escape(message)}")


@click.group(cls=_KilnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="kiln")
def cli() -> None:
    """kiln builds container images from Dockerfiles, with no daemon."""


def _read_dockerfile(file: str) -> Dockerfile:
    from kiln.dockerfile.document import load_dockerfile, parse_dockerfile

    if file == "-":
        return parse_dockerfile(sys.stdin.read(), file="<stdin>")
    return load_dockerfile(Path(file), display_name=file)


@cli.command("parse")
@click.option(
    "-f", "--file", "file", default="Dockerfile", show_default=True,
    help="The Dockerfile to parse ('-' reads standard input).",
)  # fmt: skip
@click.option(
    "--format", "output_format", type=click.Choice(["buildkit", "json"]), default="buildkit",
    show_default=True, help="buildkit: BuildKit's AST dump; json: kiln's typed instructions.",
)  # fmt: skip
def parse_command(file: str, output_format: str) -> None:
    """Print the parse of a Dockerfile: the syntax tree whatever its meaning (``kiln check``
    reports the problems), or kiln's typed instructions, which must make sense."""
    from kiln.dockerfile.document import read_dockerfile
    from kiln.dockerfile.parser import parse
    from kiln.dockerfile.serialize import dockerfile_to_dict

    if output_format == "buildkit":
        name = "<stdin>" if file == "-" else file
        text = sys.stdin.read() if file == "-" else read_dockerfile(Path(file), file)
        click.echo(parse(text, file=name).dump(), nl=False)
    else:
        dockerfile = _read_dockerfile(file)
        click.echo(json.dumps(dockerfile_to_dict(dockerfile), indent=2, ensure_ascii=False))


@cli.command("check")
@click.option(
    "-f", "--file", "file", default=None,
    help="The Dockerfile (default: CONTEXT/Dockerfile).",
)  # fmt: skip
@click.option(
    "--build-arg", "build_args", multiple=True, metavar="NAME=VALUE",
    help="A build argument, as for a build (repeatable).",
)  # fmt: skip
@click.option("--target", default="", help="Check the build of this stage.")
@click.argument(
    "context", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
def check_command(
    file: str | None, build_args: tuple[str, ...], target: str, context: Path
) -> None:
    """Report problems in a Dockerfile and its build context, as FILE:LINE: message.

    Exits with status 1 when there is an error; warnings alone exit 0.
    """
    from kiln.check import Severity, check_build

    dockerfile = Path(file) if file else context / "Dockerfile"
    report = check_build(
        dockerfile,
        context,
        build_args=_parse_build_args(build_args),
        target=target,
        display_name=file or str(dockerfile),
    )
    for problem in report.problems:
        color = "red" if problem.severity is Severity.ERROR else "yellow"
        click.echo(click.style(str(problem), fg=color) if sys.stdout.isatty() else str(problem))
    click.echo(report.summary(), err=True)
    if report.has_errors:
        sys.exit(1)


def _parse_secrets(values: tuple[str, ...]) -> dict[str, Path | bytes]:
    """``id=NAME,src=FILE`` or ``id=NAME,env=VAR`` (or ``id=VAR`` alone: that variable), as
    docker build takes them. A variable's value is handed over as it is: the build writes
    it only to its private tmpfs, never to a disk or into kiln's store."""
    secrets: dict[str, Path | bytes] = {}
    for value in values:
        fields = dict(field.partition("=")[::2] for field in value.split(","))
        name = fields.get("id", "")
        source = fields.get("src") or fields.get("source", "")
        variable = fields.get("env", "" if source else name)
        if not name or not (source or variable):
            raise KilnError(f"--secret {value!r}: expected id=NAME,src=FILE or id=NAME,env=VAR")
        if source:
            if not Path(source).is_file():
                raise KilnError(f"--secret {name}: {source} is not a readable file")
            secrets[name] = Path(source)
            continue
        if variable not in os.environ:
            raise KilnError(f"--secret {name}: the environment variable {variable} is not set")
        secrets[name] = os.environb[variable.encode()]
    return secrets


def _parse_ssh(values: tuple[str, ...]) -> dict[str, Path]:
    """``default`` (the agent $SSH_AUTH_SOCK names) or ``ID=SOCKET``, as docker build's
    --ssh; kiln forwards agent sockets, not key files."""
    agents: dict[str, Path] = {}
    for value in values:
        name, _, socket = value.partition("=")
        socket = socket or (os.environ.get("SSH_AUTH_SOCK", "") if name == "default" else "")
        if not socket:
            raise KilnError(f"--ssh {value}: give ID=SOCKET, or set SSH_AUTH_SOCK for default")
        if not Path(socket).is_socket():
            raise KilnError(f"--ssh {name}: {socket} is not an agent socket")
        agents[name] = Path(socket).absolute()
    return agents


def _parse_build_args(values: tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` pairs; a bare ``NAME`` takes its value from the environment (as docker)."""
    args: dict[str, str] = {}
    for item in values:
        name, has_value, value = item.partition("=")
        if has_value:
            args[name] = value
        elif name in os.environ:
            args[name] = os.environ[name]
    return args


# -- the image store ---------------------------------------------------------------------------


def _parse_labels(values: tuple[str, ...]) -> dict[str, str]:
    return dict(label.partition("=")[::2] for label in values)


def _parse_host(value: str) -> tuple[str, str]:
    name, colon, address = value.partition(":")
    if not colon or not name or not address:
        raise click.BadParameter(f"{value!r}: expected NAME:ADDRESS", param_hint="--add-host")
    return name, address


def _parse_volume(value: str) -> Volume:
    """``HOST:CONTAINER[:ro|rw]``, as buildah's ``--volume``; read-write unless ``ro``."""
    from kiln.engine.executor import Volume

    source, _, rest = value.partition(":")
    target, _, mode = rest.partition(":")
    if not source or not target or mode not in ("", "ro", "rw"):
        raise click.BadParameter(
            f"{value!r}: expected HOST:CONTAINER[:ro|rw]", param_hint="--volume"
        )
    return Volume(Path(source), target, readonly=mode == "ro")


def _parse_size(value: str, option: str = "--shm-size") -> int:
    """``64m``, ``1g``, ``512k`` or a number of bytes, as docker's --shm-size."""
    text = value.strip().lower().removesuffix("b")
    factor = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    number = text[:-1] if factor > 1 else text
    if not number.isdecimal() or int(number) == 0:
        raise click.BadParameter(f"{value!r}: expected a size such as 64m", param_hint=option)
    return int(number) * factor


def _parse_limits(memory: str, swap: str, shares: int, cpus: str) -> dict[str, int | str]:
    """The resource flags as docker-py's ``container_limits``, which both backends take."""
    limits: dict[str, int | str] = {"cpushares": shares, "cpusetcpus": cpus}
    limits["memory"] = _parse_size(memory, "--memory") if memory else 0
    limits["memswap"] = -1 if swap == "-1" else _parse_size(swap, "--memory-swap") if swap else 0
    return {key: value for key, value in limits.items() if value}


def _store() -> Store:
    """The store, once what killed kiln processes left in it is cleaned up."""
    from kiln.engine.workspace import reclaim

    store = Store()
    reclaim(store.root)
    return store


def _ago(timestamp: float) -> str:
    seconds = max(0, time.time() - timestamp)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "seconds ago"


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.3g}{unit}" if unit != "B" else f"{size}B"
        value /= 1000
    raise AssertionError


@cli.command("images")
@click.option("-q", "--quiet", is_flag=True, help="Print image IDs only.")
def images_command(quiet: bool) -> None:
    """List the images in kiln's store."""
    rows: list[tuple[str, str, str, StoredImage]] = []
    for image in _store().images():
        short = image.id.removeprefix("sha256:")[:12]
        if not image.tags:
            rows.append(("<none>", "<none>", short, image))
        for tag in map(Reference.parse, image.tags):
            rows.append((tag.familiar.rpartition(":")[0], tag.tag, short, image))
    if quiet:
        for short in dict.fromkeys(row[2] for row in rows):
            click.echo(short)
        return
    click.echo(f"{'REPOSITORY':<40} {'TAG':<16} {'IMAGE ID':<12}   {'CREATED':<16} SIZE")
    for name, tag_name, short, image in rows:
        click.echo(
            f"{name:<40} {tag_name:<16} {short:<12}   {_ago(image.created):<16} "
            f"{_human_size(image.size)}"
        )


@cli.command("inspect")
@click.argument("names", nargs=-1, required=True, metavar="IMAGE...")
def inspect_command(names: tuple[str, ...]) -> None:
    """Show images as JSON, like `docker image inspect`."""
    from kiln.api.images import inspect_dict

    store = _store()
    images = [store.image(name) for name in names]
    found = [inspect_dict(image, store.repo_digests(image.manifest_digest)) for image in images]
    click.echo(json.dumps(found, indent=4))


@cli.command("tag")
@click.argument("source", metavar="SOURCE_IMAGE")
@click.argument("target", metavar="TARGET_IMAGE[:TAG]")
def tag_command(source: str, target: str) -> None:
    """Give an image another name."""
    _store().tag(source, Reference.parse(target))


@cli.command("rmi")
@click.option("-f", "--force", is_flag=True, help="Remove an image even if it has several tags.")
@click.argument("names", nargs=-1, required=True, metavar="IMAGE...")
def rmi_command(force: bool, names: tuple[str, ...]) -> None:
    """Remove images (by tag: only that tag, until the last one)."""
    store = _store()
    for name in names:
        for line in store.remove(name, force=force):
            click.echo(line)


@cli.command("prune")
@click.option("--cache-mounts", is_flag=True, help="Also empty RUN --mount=type=cache directories.")
def prune_command(cache_mounts: bool) -> None:
    """Remove untagged images and data nothing uses."""
    from kiln.engine.workspace import reclaim

    store = _store()
    reclaim(store.root, strays=True)
    images, freed = store.prune()
    click.echo(f"Deleted {len(images)} untagged image(s); reclaimed {_human_size(freed)}")
    if cache_mounts:
        caches, freed = store.prune_cache_mounts()
        click.echo(f"Deleted {caches} cache mount(s); reclaimed {_human_size(freed)}")


@cli.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path), metavar="ROOTFS.tar|DIR")
@click.argument("name")
@click.option("--platform", default=None, help="os/arch[/variant] of the image (default: host).")
def import_command(source: Path, name: str, platform: str | None) -> None:
    """Make a base image from a root filesystem, as `docker import` does.

    With SOURCE_DATE_EPOCH in the environment, the image is dated then and a directory's
    later mtimes are clamped to it, so two imports of one tree give one image."""
    from kiln.epoch import source_date_epoch
    from kiln.platform import Platform
    from kiln.store.transfer import import_rootfs

    image = import_rootfs(
        _store(),
        source,
        Reference.parse(name),
        Platform.parse(platform) if platform else None,
        epoch=source_date_epoch(),
    )
    click.echo(image.id)


@cli.command("save")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write to a file, not stdout."
)
@click.argument("names", nargs=-1, required=True, metavar="IMAGE...")
def save_command(output: Path | None, names: tuple[str, ...]) -> None:
    """Write images as a tar (docker-archive and OCI layout at once)."""
    from kiln.store.transfer import save

    store = _store()
    if output is None:
        if sys.stdout.isatty():
            raise KilnError("refusing to write an image archive to a terminal: use -o FILE")
        save(store, names, sys.stdout.buffer)
        return
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as out:
            save(store, names, out)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


@cli.command("load")
@click.option(
    "-i", "--input", "source", type=click.Path(exists=True, path_type=Path), required=True,
    help="The image archive (docker save or kiln save output).",
)  # fmt: skip
def load_command(source: Path) -> None:
    """Load images from a docker-archive or OCI-layout tar."""
    from kiln.store.transfer import load

    for image in load(_store(), source):
        names = [Reference.parse(t).familiar for t in image.tags]
        click.echo(f"Loaded image: {', '.join(names)}" if names else f"Loaded image ID: {image.id}")


# -- building and running ----------------------------------------------------------------------

_INSECURE_HELP = "Use plain HTTP or unverified TLS for this registry (repeatable)."


@cli.command("build")
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]", help="Tag the image.")
@click.option("-f", "--file", "file", type=click.Path(path_type=Path), help="The Dockerfile.")
@click.option("--build-arg", "build_args", multiple=True, metavar="NAME=VALUE")
@click.option("--target", default="", help="Build this stage (and what it needs).")
@click.option(
    "--platform", "build_platform", default="", metavar="OS/ARCH[/VARIANT]",
    help="The image's platform: picks base images for it (default: this machine's).",
)  # fmt: skip
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Add a label.")
@click.option(
    "--network", type=click.Choice(["default", "host", "none"]), default="default",
    show_default=True,
    help="RUN steps' network: default (a private one, reaching out through slirp4netns), "
    "host (the host's), none.",
)  # fmt: skip
@click.option(
    "--allow", "allow", multiple=True, type=click.Choice(["network.host", "security.insecure"]),
    help="Let the Dockerfile's RUN steps have this (RUN --network=host, --security=insecure).",
)  # fmt: skip
@click.option("--no-cache", is_flag=True, help="Build every step afresh.")
@click.option(
    "--cache-from", "cache_from", multiple=True, metavar="IMAGE",
    help="Reuse the steps of IMAGE's inline cache (built with BUILDKIT_INLINE_CACHE=1).",
)  # fmt: skip
@click.option(
    "--squash", is_flag=True, help="Merge the layers the build adds into one, over the base's."
)
@click.option(
    "--commit", type=click.Choice(["implicit", "explicit"]), default="implicit",
    show_default=True,
    help="explicit: a layer ends only at steps whose line ends with #!COMMIT, and at the last.",
)  # fmt: skip
@click.option(
    "--secret", "secrets", multiple=True, metavar="id=NAME,src=FILE|env=VAR",
    help="A secret for RUN --mount=type=secret (never stored in the image).",
)  # fmt: skip
@click.option(
    "--ssh", "ssh_agents", multiple=True, metavar="default|ID=SOCKET",
    help="An SSH agent for RUN --mount=type=ssh (default: $SSH_AUTH_SOCK).",
)  # fmt: skip
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    metavar="type=docker|oci|local,dest=PATH",
    help="Also write the image out (repeatable).",
)
@click.option("--load", is_flag=True, help="Load the image into the Docker engine (DOCKER_HOST).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.option(
    "--progress", type=click.Choice(MODES), default="auto", show_default=True,
    help="auto: styled on a terminal, plain lines otherwise; quiet: none.",
)  # fmt: skip
@click.option(
    "--isolation", type=click.Choice(["oci", "chroot"]), default=None,
    help="How RUN steps are isolated: oci (runc, the default; $KILN_ISOLATION changes it) "
    "or chroot (kiln's own sandbox: namespaces, pivot_root, seccomp, no cgroups). kiln never "
    "picks chroot by itself.",
)  # fmt: skip
@click.option("--iidfile", type=click.Path(path_type=Path), help="Write the image ID here.")
@click.option(
    "--backend", type=click.Choice(["native", "docker"]), default="native", show_default=True,
    help="docker: build on the Docker engine DOCKER_HOST names, with kiln's context.",
)  # fmt: skip
@click.option(
    "--add-host",
    "add_hosts",
    multiple=True,
    metavar="NAME:ADDRESS",
    help="Add a line to /etc/hosts in RUN steps (repeatable).",
)
@click.option(
    "-v",
    "--volume",
    "volumes",
    multiple=True,
    metavar="HOST:CONTAINER[:ro|rw]",
    help="Bind a host path into RUN steps, never into the image (repeatable).",
)
@click.option(
    "--shm-size",
    default="64m",
    show_default=True,
    metavar="SIZE",
    help="Size of /dev/shm in RUN steps (bytes, or with k, m or g).",
)
@click.option("-m", "--memory", default="", metavar="SIZE", help="Memory limit of RUN steps.")
@click.option(
    "--memory-swap", default="", metavar="SIZE",
    help="Memory and swap limit of RUN steps; -1: unlimited swap (default: twice --memory).",
)  # fmt: skip
@click.option("-c", "--cpu-shares", type=int, default=0, help="CPU shares (relative weight).")
@click.option("--cpuset-cpus", default="", metavar="CPUS", help="CPUs RUN steps may use: 0-3, 0,1.")
@click.option("--pull", is_flag=True, help="Check the registry for newer base images.")
@click.option("--push", is_flag=True, help="Push every -t tag to its registry after the build.")
@click.option(
    "--parent-registry", default="", metavar="HOST",
    help="Pull base images from HOST, whatever registry their names say.",
)  # fmt: skip
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST", help=_INSECURE_HELP)
@click.option(
    "--source", metavar="git+URI[#REF] | PATH",
    help="Build from a git repository at REF (or a directory) through the plugin workflow, "
    "instead of a CONTEXT; -f is then the Dockerfile's path in it.",
)  # fmt: skip
@click.option(
    "--results", "results_path", type=click.Path(dir_okay=False, path_type=Path),
    help="With --source: write the build's results (JSON) here.",
)  # fmt: skip
@click.argument(
    "context", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
def build_command(
    tags: tuple[str, ...],
    file: Path | None,
    build_args: tuple[str, ...],
    target: str,
    build_platform: str,
    labels: tuple[str, ...],
    network: str,
    allow: tuple[str, ...],
    no_cache: bool,
    cache_from: tuple[str, ...],
    squash: bool,
    commit: str,
    secrets: tuple[str, ...],
    ssh_agents: tuple[str, ...],
    outputs: tuple[str, ...],
    load: bool,
    quiet: bool,
    progress: str,
    isolation: str | None,
    iidfile: Path | None,
    add_hosts: tuple[str, ...],
    volumes: tuple[str, ...],
    shm_size: str,
    memory: str,
    memory_swap: str,
    cpu_shares: int,
    cpuset_cpus: str,
    pull: bool,
    push: bool,
    parent_registry: str,
    insecure: tuple[str, ...],
    backend: str,
    source: str | None,
    results_path: Path | None,
    context: Path | None,
) -> None:
    """Build an image from a Dockerfile and a context (or a --source), with no daemon."""
    limits = _parse_limits(memory, memory_swap, cpu_shares, cpuset_cpus)
    if source is not None:
        ignored = {"CONTEXT": context, "--output": outputs, "--load": load, "--secret": secrets,
                   "--ssh": ssh_agents, "--platform": build_platform,
                   "--add-host": add_hosts, "--volume": volumes, "--label": labels,
                   "--network": network != "default", "--allow": allow,
                   "--shm-size": shm_size != "64m",
                   "--squash": squash, "--commit explicit": commit == "explicit",
                   "--cache-from": cache_from,
                   "--memory, --memory-swap, --cpu-shares, --cpuset-cpus": limits}  # fmt: skip
        refused = [name for name, value in ignored.items() if value]
        if refused:
            raise click.UsageError(f"{', '.join(refused)}: not with --source")
        image_id = _build_source(
            source, tags, file, build_args, target, no_cache, isolation, pull, push,
            parent_registry, insecure, backend, quiet, results_path,
        )  # fmt: skip
        if iidfile is not None:
            iidfile.write_text(image_id)
        click.echo(image_id if quiet else f"Successfully built {image_id}", err=not quiet)
        return
    if context is None:
        raise click.UsageError("give a CONTEXT directory, or --source")
    if results_path is not None:
        raise click.UsageError("--results: only with --source")
    if backend == "docker":
        native_only = {"--output": outputs, "--load": load, "--push": push, "--secret": secrets,
                       "--parent-registry": parent_registry, "--isolation": isolation,
                       "--ssh": ssh_agents, "--platform": build_platform,
                       "--volume": volumes, "--squash": squash, "--cache-from": cache_from,
                       "--commit explicit": commit == "explicit"}  # fmt: skip
        refused = [name for name, value in native_only.items() if value]
        if refused:
            raise click.UsageError(f"{', '.join(refused)}: not with --backend docker")
        image_id = _build_on_engine(
            context, file, tags, build_args, target, labels, network, no_cache, pull, quiet,
            add_hosts, shm_size, limits,
        )  # fmt: skip
        if iidfile is not None:
            iidfile.write_text(image_id)
        click.echo(image_id if quiet else f"Successfully built {image_id}", err=not quiet)
        return
    from kiln.context import ContextScan, load_ignore

    # The context's stat walk starts first: it runs on another core while kiln imports.
    ignore = load_ignore(context, file or context / "Dockerfile")
    scan = ContextScan(context, ignore.matcher if ignore else None)

    with scan:
        from kiln.engine.executor import Builder, BuildRequest
        from kiln.engine.layering import Layering
        from kiln.engine.runtime import Limits
        from kiln.outputs import export, load_into_docker, parse_output
        from kiln.platform import Platform

        for tag in tags:
            Reference.parse(tag)  # a bad tag or output fails before the build, not after
        if push and not tags:
            raise click.UsageError("--push needs at least one -t NAME to push to")
        exports = [parse_output(spec) for spec in outputs]
        request = BuildRequest(
            context=context,
            dockerfile=file,
            tags=tags,
            build_args=_parse_build_args(build_args),
            target=target,
            labels=_parse_labels(labels),
            network=network,
            allow=allow,
            no_cache=no_cache,
            isolation=isolation,
            secrets=_parse_secrets(secrets),
            ssh=_parse_ssh(ssh_agents),
            platform=Platform.parse(build_platform) if build_platform else None,
            pull=pull,
            insecure_registries=insecure,
            parent_registry=parent_registry,
            extra_hosts=tuple(_parse_host(h) for h in add_hosts),
            shm_size=_parse_size(shm_size),
            volumes=tuple(_parse_volume(v) for v in volumes),
            limits=Limits.from_docker(limits),
            layering=Layering(squash=squash, explicit=commit == "explicit"),
            cache_from=cache_from,
        )
        output = printer("quiet" if quiet else progress)
        store = _store()
        try:
            image = Builder(store, output).build(request, scan)
            for destination in exports:
                export(store, image, destination, tags)
                output(f"exported to {destination.type}:{destination.dest}")
            if load:
                for name in load_into_docker(store, image, tags):
                    output(f"Loaded image: {name}")
            if push:
                from kiln.registry import push_image

                for tag in tags:
                    reference = Reference.parse(tag)
                    with _client(reference.registry, insecure) as client:
                        pushed = push_image(store, image.id, reference, client, output=output)
                    output(f"pushed {reference.familiar}@{pushed.digest}")
        finally:
            output.close()
        if iidfile is not None:
            iidfile.write_text(image.id)
        if quiet:
            click.echo(image.id)
        else:
            click.echo(f"Successfully built {image.id}", err=True)
            for tag in image.tags:
                click.echo(f"Successfully tagged {Reference.parse(tag).familiar}", err=True)


def _build_source(
    source: str,
    tags: tuple[str, ...],
    file: Path | None,
    build_args: tuple[str, ...],
    target: str,
    no_cache: bool,
    isolation: str | None,
    pull: bool,
    push: bool,
    parent_registry: str,
    insecure: tuple[str, ...],
    backend: str,
    quiet: bool,
    results_path: Path | None,
) -> str:
    """``kiln build --source``: the plugin workflow with the options as plugins (``--pull``:
    pull_base_image, ``--push``: tag_and_push); the image ID."""
    from kiln.workflow import BuildDescription

    if not tags:
        raise click.UsageError("--source needs -t NAME for the image")
    if source.startswith("git+"):
        uri, _, ref = source.removeprefix("git+").partition("#")  # the fragment names the ref
        spec: dict[str, object] = {"provider": "git", "uri": uri,
                                   "provider_params": {"git_commit": ref}}  # fmt: skip
    else:
        path = Path(source.removeprefix("file://")).resolve()
        spec = {"provider": "path", "uri": f"file://{path}"}
    spec["dockerfile_path"] = str(file) if file else ""
    registries = {Reference.parse(t).registry for t in tags}
    description = BuildDescription.from_dict({
        "source": spec, "image": tags[0], "tags": list(tags[1:]), "backend": backend,
        "build_args": _parse_build_args(build_args), "target": target, "no_cache": no_cache,
        "isolation": isolation,
        **({"parent_registry": parent_registry,
            "parent_registry_insecure": parent_registry in insecure} if parent_registry else {}),
        "prebuild_plugins": [{"name": "pull_base_image"}] if pull else [],
        "postbuild_plugins": [{"name": "tag_and_push", "args": {"registries": {
            r: {"insecure": r in insecure} for r in sorted(registries)}}}] if push else [],
    }, "--source build")  # fmt: skip
    if push and len(registries) > 1:
        raise click.UsageError("--source --push: give -t names of one registry")
    return run_workflow(description, quiet, results_path).image_id


# -- registries ----------------------------------------------------------------------------


def _bars(quiet: bool) -> AbstractContextManager[Callable[[str, int, int], None] | None]:
    """Transfer bars on a terminal, for pushes and pulls."""
    from kiln.cli.progress import transfer_bars

    return transfer_bars(not quiet and sys.stdout.isatty())


def _client(host: str, insecure: tuple[str, ...]) -> RegistryClient:
    from kiln.registry import RegistryClient

    return RegistryClient(host, insecure=True if host in insecure else None)


@cli.command("push")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST", help=_INSECURE_HELP)
@click.option(
    "--compression", type=click.Choice(["gzip", "zstd", "uncompressed"]), default="gzip",
    show_default=True, help="How layers are compressed for the registry.",
)  # fmt: skip
@click.option(
    "--format", "image_format", type=click.Choice(["oci", "docker"]), default="oci",
    show_default=True, help="OCI media types, or Docker's schema 2.",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed digest.")
@click.argument("image")
@click.argument("destination", required=False)
def push_command(
    insecure: tuple[str, ...],
    compression: str,
    image_format: str,
    quiet: bool,
    image: str,
    destination: str | None,
) -> None:
    """Push IMAGE from the store to a registry (to DESTINATION if given)."""
    from kiln.registry import push_image

    target = Reference.parse(destination or image)
    store = _store()
    store.image(image)  # a missing image fails before any connection is made
    with _client(target.registry, insecure) as client, _bars(quiet) as bars:
        pushed = push_image(
            store, image, target, client, compression=compression, format=image_format,
            output=(lambda line: None) if quiet else click.echo, progress=bars,
        )  # fmt: skip
    click.echo(pushed.digest if quiet else f"Pushed {target.familiar}@{pushed.digest}")


@cli.command("pull")
@click.option("--platform", default="", help="OS/ARCH[/VARIANT] (default: this machine's).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST", help=_INSECURE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.argument("image")
def pull_command(platform: str, insecure: tuple[str, ...], quiet: bool, image: str) -> None:
    """Pull IMAGE from its registry into the store."""
    from kiln.platform import Platform
    from kiln.registry import pull_image

    reference = Reference.parse(image)
    wanted = Platform.parse(platform) if platform else Platform.host()
    with _client(reference.registry, insecure) as client, _bars(quiet) as bars:
        pulled = pull_image(
            _store(), reference, client, platform=wanted,
            output=(lambda line: None) if quiet else click.echo, progress=bars,
        )  # fmt: skip
    click.echo(pulled.id if quiet else f"Pulled {reference.familiar} ({pulled.id})")


@cli.command("login")
@click.option("-u", "--username", prompt=True, help="The user name.")
@click.option("-p", "--password", help="The password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST", help=_INSECURE_HELP)
@click.argument("registry", default="docker.io")
def login_command(
    username: str,
    password: str | None,
    password_stdin: bool,
    insecure: tuple[str, ...],
    registry: str,
) -> None:
    """Check credentials with REGISTRY and save them where docker login does."""
    from kiln.registry import Credentials, RegistryClient, save_login

    if password_stdin:
        password = sys.stdin.read().rstrip("\n")
    elif password is None:
        password = click.prompt("Password", hide_input=True)
    credentials = Credentials(username, password)
    insecure_host = True if registry in insecure else None
    with RegistryClient(registry, insecure=insecure_host, credentials=credentials) as client:
        client.ping()
    path = save_login(registry, credentials)
    click.echo(f"Login Succeeded (credentials saved in {path})")


@cli.command("logout")
@click.argument("registry", default="docker.io")
def logout_command(registry: str) -> None:
    """Remove the saved credentials of REGISTRY."""
    from kiln.registry import remove_login

    if remove_login(registry):
        click.echo(f"Removed login credentials for {registry}")
    else:
        click.echo(f"Not logged in to {registry}")


def _build_on_engine(
    context: Path,
    file: Path | None,
    tags: tuple[str, ...],
    build_args: tuple[str, ...],
    target: str,
    labels: tuple[str, ...],
    network: str,
    no_cache: bool,
    pull: bool,
    quiet: bool,
    add_hosts: tuple[str, ...],
    shm_size: str,
    limits: dict[str, int | str],
) -> str:
    """``kiln build --backend docker``: the build on a Docker engine; its image ID."""
    from kiln.api import Client

    with Client(backend="docker") as client:
        image, _ = client.images.build(
            path=str(context),
            dockerfile=str(file.resolve().relative_to(context.resolve())) if file else None,
            tag=tags[0] if tags else None, buildargs=_parse_build_args(build_args),
            target=target or None, labels=_parse_labels(labels),
            network_mode=network, nocache=no_cache, pull=pull,
            extra_hosts=dict(_parse_host(h) for h in add_hosts) or None,
            shmsize=_parse_size(shm_size), container_limits=limits or None,
            output=None if quiet else (lambda line: click.echo(line, err=True)),  # live
        )  # fmt: skip
        for extra in tags[1:]:
            image.tag(extra)
        return str(image.id)


@cli.command("run", context_settings={"allow_interspersed_args": False})
@click.option("--rm", is_flag=True, help="Accepted for docker's sake: kiln never keeps containers.")
@click.option(
    "--network", type=click.Choice(["default", "host", "none"]), default="default",
    show_default=True,
    help="The container's network: default (a private one, reaching out through "
    "slirp4netns), host (the host's), none.",
)  # fmt: skip
@click.option(
    "--isolation", type=click.Choice(["oci", "chroot"]), default=None,
    help="runc (oci, the default), or kiln's own sandbox (chroot), as for RUN steps.",
)  # fmt: skip
@click.argument("image")
@click.argument("command", nargs=-1)
def run_command(
    rm: bool, network: str, isolation: str | None, image: str, command: tuple[str, ...]
) -> None:
    """Run an image's entrypoint and command (or COMMAND) in a throwaway container."""
    from kiln.engine.container import run_image

    def output(line: bytes) -> None:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()

    status = run_image(_store(), image, list(command), network, output, isolation)
    sys.exit(status)


cli.add_command(workflow_group)


def _terminate(number: int, frame: object) -> None:
    raise Terminated("terminated by SIGTERM")


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="kiln")
