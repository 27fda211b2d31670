"""incubator 0.9's ``build()``, carried out by kiln's native builder.

incubator (lachmanfrantisek/incubator) drove a Docker engine one container per instruction;
its ideas were settings merged from config files, build-time volumes and explicit layering.
This keeps its entry point, with its arguments meaning what they meant there:

- ``config``: a dict, a YAML or JSON file path, or a list of both, merged in order (dicts
  merge key by key, lists concatenate, scalars override), then the arguments given merge
  in the same way. The keys are incubator's schema: ``buildargs``, ``container_limits``,
  ``context_file_limit``, ``forcerm``, ``labels``, ``layers``, ``pull``, ``rm``, ``tags`` (a
  list: the ``tag`` argument is added to it), ``volumes``, ``version`` (1), ``config_name``,
  and ``infinite_command``/``mkdir_command``, which only told incubator how to drive its
  long-lived container and mean nothing here. Unlike incubator, ``pull=False``, ``rm=False``
  and ``forcerm=False`` count as not given, so they do not undo a config's ``True``.
- ``volumes``: ``source:destination[:mode]`` strings (mode ``ro`` or ``rw``) or
  ``kiln.engine.executor.Volume`` objects: bound into every RUN step, never in the image
  (``z``/``Z`` mean ``rw``: RUN steps carry no SELinux label to relabel for).
- ``container_limits``: docker-py's ``memory``, ``memswap``, ``cpushares`` and
  ``cpusetcpus``, the cgroup limits of every RUN step (the oci isolation only).
- ``layers``: incubator's layer splits, numbers of the Dockerfile's instructions (0-based,
  FROM and ARG included, comments not): ``i`` commits a layer between instructions ``i - 1``
  and ``i``, and the last instruction always ends one; instructions that change no files
  never make a layer of their own. ``[0]`` is one layer over the base image; ``[]`` (the
  default) one per instruction that changes files, kiln's own layering. Each step still
  caches its own layer: the image's layers are merged after the build.
- ``cache``: True or None use kiln's layer cache, False builds every step afresh. (incubator
  took a cache object, whose implementation was an empty stub.)
- ``container_client``: a native ``kiln.api.Client``, whose store the image goes into; or,
  as in incubator, a Docker engine (``docker.DockerClient`` or ``Client(backend="docker")``),
  which then builds it (``volumes`` and ``layers`` need the native builder).
- The result is a ``kiln.api.Image`` with incubator's ``id`` and ``logs`` (docker-py's log
  entries here, not incubator's per-instruction objects).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from kiln.api.build import build_native
from kiln.api.client import Client
from kiln.api.images import Image, ImageCollection, NotSupported
from kiln.engine.executor import Volume
from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.store import StoredImage

ConfigSource = Mapping[str, Any] | str | os.PathLike[str]

# incubator's config schema (version 1): each key and the types its value may have.
_SCHEMA: dict[str, tuple[type, ...]] = {
    "version": (int, float),
    "config_name": (str,),
    "buildargs": (Mapping,),
    "container_limits": (Mapping,),
    "context_file_limit": (int,),
    "forcerm": (bool,),
    "infinite_command": (str,),
    "labels": (Mapping,),
    "layers": (list,),
    "mkdir_command": (str,),
    "pull": (bool,),
    "rm": (bool,),
    "tags": (list, str),
    "volumes": (list, str),
}


class ConfigError(KilnError):
    """A config (or argument) that cannot be read, or does not fit incubator's schema."""


class ResultImage(Image):
    """The built image, with incubator's ``logs`` beside docker-py's ``Image`` attributes."""

    def __init__(
        self, collection: ImageCollection, stored: StoredImage, logs: list[dict[str, Any]]
    ) -> None:
        super().__init__(collection, stored)
        self.logs = logs


def build(
    path: str | None = None,
    fileobj: IO[bytes] | IO[str] | None = None,
    tag: str | None = None,
    custom_context: bool = False,
    pull: bool = False,
    rm: bool = False,
    forcerm: bool = False,
    dockerfile: str | None = None,
    buildargs: Mapping[str, str] | None = None,
    container_limits: Mapping[str, Any] | None = None,
    volumes: Sequence[str | Volume] | str | None = None,
    layers: Sequence[int] | None = None,
    labels: Mapping[str, str] | None = None,
    config: ConfigSource | Sequence[ConfigSource] | None = None,
    context_file_limit: int | None = None,
    container_client: Any = None,  # a kiln.api.Client, or a docker.DockerClient
    cache: bool | None = None,
) -> Any:  # a ResultImage; docker-py's Image (with .logs) on a Docker engine
    """Build an image as incubator's ``build`` did (see the module's docstring).

    ``path`` is a context directory; ``fileobj`` a Dockerfile, or with ``custom_context`` a
    (possibly compressed) tar of the context, read into memory up to ``context_file_limit``
    bytes and to disk beyond (0 or None: no limit). That is the limit's meaning in incubator:
    its config schema says "Limit for the context to be saved in memory. When the limit is
    reached, the file is saved to disk", and it made the context tar a
    ``SpooledTemporaryFile(max_size=limit)``. A ``path`` is read in place, never tarred.
    A failed build raises ``kiln.api.BuildError``; incubator did not check RUN's exit code.
    """
    if isinstance(volumes, str):
        volumes = [volumes]
    given = {
        "buildargs": buildargs,
        "container_limits": container_limits,
        "context_file_limit": context_file_limit,
        "forcerm": forcerm or None,
        "labels": labels,
        "layers": None if layers is None else list(layers),
        "pull": pull or None,
        "rm": rm or None,
        "tags": [tag] if tag else None,
        "volumes": None if volumes is None else list(volumes),
    }
    settings = _merge(_merged(config), {k: v for k, v in given.items() if v is not None})
    splits = settings.get("layers", [])
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in splits):
        raise ConfigError(f"build: layers must be instruction numbers (0 or more), not {splits}")
    if cache is not None and not isinstance(cache, bool):
        raise NotSupported("build: cache takes True, False or None (kiln's layer cache)")
    client = Client() if container_client is None else container_client
    engine = _docker_engine(client)
    if engine is None and (not isinstance(client, Client) or client.store is None):
        raise NotSupported(
            "build: container_client must be a kiln.api.Client or a docker.DockerClient"
        )
    limit = settings.get("context_file_limit") or 0
    if limit < 0:
        raise ConfigError(f"build: context_file_limit must be a number of bytes, not {limit!r}")
    if custom_context and fileobj is None:
        raise KilnError("build: custom_context needs fileobj, a tar of the context")
    tags = [str(t) for t in settings.get("tags", [])]
    for name in tags:
        Reference.parse(name)  # a bad tag fails before the build, not after
    binds = [_volume(v) for v in settings.get("volumes", [])]
    if engine is not None and (binds or splits):
        raise NotSupported(
            "build: volumes and layers need kiln's native builder: a Docker engine's build "
            "has no build-time mounts and makes a layer per instruction"
        )
    with tempfile.TemporaryDirectory(prefix="kiln-incubator-") as scratch:
        if fileobj is not None:
            path = str(_context(fileobj, custom_context, limit, Path(scratch)))
            dockerfile = dockerfile if custom_context else None
        if engine is not None:
            return _build_on_engine(engine, path, tags, cache, settings, dockerfile)
        assert isinstance(client, Client) and client.store is not None
        stored, log = build_native(
            client.store,
            path=path,
            tag=tags[0] if tags else None,
            nocache=cache is False,
            pull=bool(settings.get("pull")),
            rm=bool(settings.get("rm")),
            forcerm=bool(settings.get("forcerm")),
            dockerfile=dockerfile,
            buildargs={k: str(v) for k, v in settings.get("buildargs", {}).items()},
            labels={k: str(v) for k, v in settings.get("labels", {}).items()},
            container_limits=settings.get("container_limits"),
            use_config_proxy=False,  # incubator passed no proxy settings
            volumes=binds,
            layers=splits,
        )
    for extra in tags[1:]:
        client.store.tag(stored.manifest_digest, Reference.parse(extra))
        log.append({"stream": f"Successfully tagged {extra}\n"})
    return ResultImage(client.images, client.store.image(stored.manifest_digest), log)


def _docker_engine(client: object) -> Any:
    """The docker-py client behind ``container_client``, if it names a Docker engine (as
    incubator's always did): a ``docker.DockerClient`` or ``Client(backend="docker")``."""
    if isinstance(client, Client):
        return client.engine if client.store is None else None
    module = type(client).__module__
    return client if module.split(".")[0] == "docker" else None


def _build_on_engine(
    engine: Any,
    path: str | None,
    tags: list[str],
    cache: bool | None,
    settings: Mapping[str, Any],
    dockerfile: str | None,
) -> Any:
    """The build on a Docker engine, through kiln's context tar; docker-py's ``Image``
    with incubator's ``logs``."""
    from kiln.api.docker_backend import DockerImageCollection

    image, log = DockerImageCollection(engine).build(
        path=path, tag=tags[0] if tags else None, nocache=cache is False,
        pull=bool(settings.get("pull")), rm=bool(settings.get("rm", True)),
        forcerm=bool(settings.get("forcerm")), dockerfile=dockerfile,
        buildargs={k: str(v) for k, v in settings.get("buildargs", {}).items()},
        labels={k: str(v) for k, v in settings.get("labels", {}).items()},
        container_limits=settings.get("container_limits"),
    )  # fmt: skip
    for extra in tags[1:]:
        reference = Reference.parse(extra)
        image.tag(f"{reference.registry}/{reference.repository}", reference.tag)
    image.logs = list(log)
    return image


def _merged(config: ConfigSource | Sequence[ConfigSource] | None) -> dict[str, Any]:
    """incubator's settings from ``config``: each dict or file checked against its schema,
    then merged in order."""
    if config is None:
        return {}
    sources = [config] if isinstance(config, Mapping | str | os.PathLike) else list(config)
    settings: dict[str, Any] = {}
    for source in sources:
        settings = _merge(settings, _checked(*_load(source)))
    return settings


def _load(source: ConfigSource) -> tuple[dict[str, Any], str]:
    """A config and the name errors give it: a dict as it is, or a YAML (or JSON) file."""
    if isinstance(source, Mapping):
        return dict(source), repr(source["config_name"]) if "config_name" in source else "dict"
    name = os.fspath(source)
    try:
        with open(name, encoding="utf-8") as stream:
            loaded = yaml.safe_load(stream)
    except OSError as err:
        raise ConfigError(f"config {name}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"config {name}: not YAML or JSON: {' '.join(str(err).split())}"
        ) from None
    if loaded is None:
        return {}, name
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {name}: expected a mapping of settings")
    return loaded, name


def _checked(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config`` if it fits incubator's schema (as incubator refused configs that did not),
    with a lone tag or volume made a list."""
    for key, value in config.items():
        types = _SCHEMA.get(key)
        if types is None:
            raise ConfigError(
                f"config {name}: unknown key {key!r} (incubator's: {', '.join(_SCHEMA)})"
            )
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"config {name}: {key} cannot be {value!r}")
    if config.get("version", 1) != 1:
        raise ConfigError(f"config {name}: version {config['version']!r} (incubator's schema is 1)")
    for key in ("tags", "volumes"):
        if isinstance(config.get(key), str):
            config[key] = [config[key]]
    return config


def _merge(base: Any, other: Any) -> Any:
    """incubator's merge: dicts key by key (recursively), lists concatenated, else ``other``."""
    if isinstance(base, Mapping) and isinstance(other, Mapping):
        merged = dict(base)
        for key, value in other.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(base, list) and isinstance(other, list):
        return [*base, *other]
    return other


def _volume(spec: str | Volume) -> Volume:
    """incubator's ``source:destination[:mode]``: modes ro and rw; z and Z, which relabel
    the source for an SELinux-confined container, mean rw here: kiln's RUN steps run with
    no SELinux label, so there is nothing to relabel for."""
    if isinstance(spec, Volume):
        return spec
    parts = str(spec).split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"volume {spec!r}: expected source:destination[:mode]")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw", "z", "Z"):
        raise ConfigError(f"volume {spec!r}: mode must be ro, rw, z or Z")
    return Volume(Path(parts[0]), parts[1], readonly=mode == "ro")


def _spool(fileobj: IO[bytes] | IO[str], limit: int) -> tempfile.SpooledTemporaryFile[bytes]:
    """``fileobj``'s bytes, in memory up to ``limit`` and on disk past it (0: no limit)."""
    spool: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=limit
    )  # the caller closes it
    while chunk := fileobj.read(1 << 20):
        spool.write(chunk.encode() if isinstance(chunk, str) else chunk)
    spool.seek(0)
    return spool


def _context(fileobj: IO[bytes] | IO[str], custom_context: bool, limit: int, scratch: Path) -> Path:
    """A context directory from ``fileobj``: the context tar unpacked, or the Dockerfile."""
    context = scratch / "context"
    context.mkdir()
    with _spool(fileobj, limit) as spool:
        if not custom_context:
            with open(context / "Dockerfile", "wb") as out:
                shutil.copyfileobj(spool, out)
            return context
        try:
            with tarfile.open(fileobj=spool, mode="r:*") as tar:
                tar.extractall(context, filter="data")  # no links out, no devices
        except tarfile.TarError as err:
            raise KilnError(f"build: fileobj is not a usable context tar: {err}") from None
    return context
