"""docker-py's ``images.build(...)`` arguments, carried out by kiln's native builder.

Each argument is honoured where it means something without a daemon; those that have no
native meaning yet are refused with ``NotSupported``, never silently dropped.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kiln.api.errors import BuildError
from kiln.api.images import NotSupported
from kiln.errors import KilnError
from kiln.platform import Platform
from kiln.store import Store, StoredImage

if TYPE_CHECKING:
    from kiln.engine.executor import Volume

# docker-py's proxy settings (``~/.docker/config.json`` "proxies") and the build args
# they become, as the docker CLI passes them.
_PROXY_ARGS = {
    "httpProxy": "HTTP_PROXY", "httpsProxy": "HTTPS_PROXY", "ftpProxy": "FTP_PROXY",
    "noProxy": "NO_PROXY", "allProxy": "ALL_PROXY",
}  # fmt: skip
# docker-py's network modes: its default (a bridge) is a private network here too.
_NETWORKS = {None: "default", "default": "default", "bridge": "default", "host": "host",
             "none": "none"}  # fmt: skip
_ISOLATIONS = {None: None, "default": None, "process": None, "oci": "oci", "chroot": "chroot"}


def build_native(
    store: Store,
    path: str | None = None,
    fileobj: IO[bytes] | IO[str] | None = None,
    tag: str | None = None,
    quiet: bool = False,
    nocache: bool = False,
    rm: bool = True,
    timeout: int | None = None,
    custom_context: bool = False,
    encoding: str | None = None,
    pull: bool = False,
    forcerm: bool = False,
    dockerfile: str | None = None,
    buildargs: Mapping[str, str] | None = None,
    container_limits: Mapping[str, Any] | None = None,
    shmsize: int | None = None,
    labels: Mapping[str, str] | None = None,
    cache_from: list[str] | None = None,
    target: str | None = None,
    network_mode: str | None = None,
    squash: bool | None = None,
    extra_hosts: Mapping[str, str] | list[str] | None = None,
    platform: str | None = None,
    isolation: str | None = None,
    use_config_proxy: bool = True,
    output: Callable[[str], None] | None = None,
    volumes: Sequence[Volume] = (),  # kiln's own: host paths bound into RUN steps
    layers: Sequence[int] = (),  # kiln's own: incubator's layer splits (kiln.engine.layering)
) -> tuple[StoredImage, list[dict[str, Any]]]:
    """Build as docker-py's ``images.build`` describes, natively.

    ``rm``/``forcerm`` hold trivially (kiln keeps no intermediate containers) and ``timeout``
    is docker-py's HTTP timeout, which has no daemon to apply to. ``output`` (kiln's own)
    gets each log line as it comes. ``squash`` merges the layers the build adds into one,
    over the base image's, as ``docker build --squash`` does.
    """
    from kiln.engine.executor import Builder, BuildRequest
    from kiln.engine.layering import Layering
    from kiln.engine.runtime import DOCKER_LIMITS, Limits

    unknown = sorted(set(container_limits or {}) - set(DOCKER_LIMITS))
    if unknown:
        raise NotSupported(
            f"build: container_limits {', '.join(unknown)} "
            f"(native builds: {', '.join(DOCKER_LIMITS)})"
        )
    if network_mode not in _NETWORKS:
        raise NotSupported(
            f"build: network_mode {network_mode!r} (native builds: default, bridge, host, none)"
        )
    if isolation not in _ISOLATIONS:
        raise NotSupported(f"build: isolation {isolation!r} (native builds: oci, chroot)")
    args = dict(_config_proxies() if use_config_proxy else {})
    args.update(buildargs or {})
    log: list[dict[str, Any]] = []

    def record(line: str) -> None:
        if not quiet:
            log.append({"stream": line + "\n"})
            if output is not None:
                output(line)

    with tempfile.TemporaryDirectory(prefix="kiln-api-") as scratch:
        context = _context(Path(scratch), path, fileobj, custom_context, encoding)
        request = BuildRequest(
            context=context,
            dockerfile=context / dockerfile if dockerfile else None,
            tags=(tag,) if tag else (),
            build_args=args,
            target=target or "",
            labels=dict(labels or {}),
            network=_NETWORKS[network_mode],
            no_cache=nocache,
            isolation=_ISOLATIONS[isolation],
            pull=pull,
            extra_hosts=_hosts(extra_hosts),
            shm_size=shmsize or 64 << 20,
            platform=Platform.parse(platform) if platform else None,
            cache_from=tuple(cache_from or ()),
            volumes=tuple(volumes),
            limits=Limits.from_docker(container_limits or {}),
            layering=Layering(squash=bool(squash), splits=tuple(layers)),
        )
        try:
            image = Builder(store, record).build(request)
        except KilnError as err:
            log.append({"error": str(err), "errorDetail": {"message": str(err)}})
            raise BuildError(str(err), log) from None
    log.append({"stream": f"Successfully built {image.id.removeprefix('sha256:')[:12]}\n"})
    if tag:
        log.append({"stream": f"Successfully tagged {tag}\n"})
    return image, log


def _context(
    scratch: Path,
    path: str | None,
    fileobj: IO[bytes] | IO[str] | None,
    custom_context: bool,
    encoding: str | None,
) -> Path:
    """The build context: ``path``; or a context tar (``custom_context``); or a lone
    Dockerfile in ``fileobj`` with an empty context, as docker-py takes them."""
    if fileobj is None:
        if path is None:
            raise KilnError("build: either path or fileobj must be given")
        return Path(path)
    context = scratch / "context"
    context.mkdir()
    data = fileobj.read()
    raw = data.encode() if isinstance(data, str) else data
    if not custom_context:
        (context / "Dockerfile").write_bytes(raw)
        return context
    mode = {None: "r:", "gzip": "r:gz", "bzip2": "r:bz2", "xz": "r:xz"}.get(encoding)
    if mode is None:
        raise NotSupported(f"build: encoding {encoding!r} (gzip, bzip2, xz or none)")
    import io

    with tarfile.open(fileobj=io.BytesIO(raw), mode=mode) as tar:  # type: ignore[call-overload]
        tar.extractall(context, filter="data")  # no links out, no devices, no absolute paths
    return context


def _hosts(extra_hosts: Mapping[str, str] | list[str] | None) -> tuple[tuple[str, str], ...]:
    """docker-py's ``extra_hosts``: a mapping of name to address, or ``name:address`` items."""
    if not extra_hosts:
        return ()
    if isinstance(extra_hosts, Mapping):
        return tuple((str(name), str(address)) for name, address in extra_hosts.items())
    pairs = [item.partition(":") for item in extra_hosts]
    return tuple((name, address) for name, _, address in pairs)


def _config_proxies() -> dict[str, str]:
    """Proxy build args from the Docker config's ``proxies.default``."""
    from kiln.registry.credentials import config_path

    try:
        config = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}
    proxies = (config.get("proxies") or {}).get("default") or {}
    args: dict[str, str] = {}
    for key, name in _PROXY_ARGS.items():
        if proxies.get(key):
            args[name] = args[name.lower()] = str(proxies[key])
    return args
