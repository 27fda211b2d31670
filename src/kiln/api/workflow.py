"""atomic-reactor's three build modes, returning the same ``BuildResults`` each:

- ``build_image_here``: the workflow in this process;
- ``build_image_in_privileged_container``: the workflow inside a privileged "buildroot"
  container (an image with kiln installed, see ``buildroot/``) on a Docker engine, kiln's
  native backend building inside it;
- ``build_image_using_hosts_docker``: the same container, unprivileged, given the engine's
  socket and building on that engine (the Docker backend).

The build description goes into the container through a shared directory and the results
come back the same way, as JSON: the caller gets full results, not just an exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.workflow import BuildDescription, BuildResults, BuildWorkflow, PushedImage, SourceSpec

SHARED = "/run/kiln"  # where the shared directory is in the buildroot container


class BuildrootError(KilnError):
    """The buildroot container could not run the workflow or returned no results."""


def build_image_here(
    source: Mapping[str, Any] | SourceSpec,
    image: str,
    parent_registry: str | None = None,
    target_registries: list[str] | None = None,
    parent_registry_insecure: bool = False,
    target_registries_insecure: bool = False,
    dont_pull_base_image: bool = False,
    **kwargs: Any,
) -> BuildResults:
    """Build ``source`` into ``image`` in this process. ``kwargs`` are more keys of the build
    description (``prebuild_plugins``, ``backend``, ``build_args``, ``plugin_files``...);
    ``output`` (a callable) gets each log line as it comes."""
    output: Callable[[str], None] | None = kwargs.pop("output", None)
    description = BuildDescription.from_dict(describe(
        source, image, parent_registry, target_registries, parent_registry_insecure,
        target_registries_insecure, dont_pull_base_image, kwargs,
    ))  # fmt: skip
    return BuildWorkflow(description, output=output).run()


def describe(
    source: Mapping[str, Any] | SourceSpec,
    image: str,
    parent_registry: str | None,
    target_registries: list[str] | None,
    parent_registry_insecure: bool,
    target_registries_insecure: bool,
    dont_pull_base_image: bool,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The build description atomic-reactor's API functions make: the base image pulled
    first (unless told not to) and, with target registries, pushed to them at the end."""
    if isinstance(source, SourceSpec):
        source = {"provider": source.provider, "uri": source.uri,
                  "dockerfile_path": source.dockerfile_path,
                  "provider_params": dict(source.provider_params)}  # fmt: skip
    data: dict[str, Any] = {"source": dict(source), "image": image, **extra}
    if parent_registry:
        data["parent_registry"] = parent_registry
        data["parent_registry_insecure"] = parent_registry_insecure
    prebuild = list(data.get("prebuild_plugins") or [])
    if not dont_pull_base_image and not any(p.get("name") == "pull_base_image" for p in prebuild):
        prebuild.insert(0, {"name": "pull_base_image"})
    data["prebuild_plugins"] = prebuild
    if target_registries:
        data["target_registries"] = list(target_registries)
        data["target_registries_insecure"] = target_registries_insecure
        postbuild = list(data.get("postbuild_plugins") or [])
        if not any(p.get("name") == "tag_and_push" for p in postbuild):
            postbuild.append({"name": "tag_and_push"})
        data["postbuild_plugins"] = postbuild
    return data


def build_image_in_privileged_container(
    build_image: str,
    source: Mapping[str, Any] | SourceSpec,
    image: str,
    parent_registry: str | None = None,
    target_registries: list[str] | None = None,
    push_buildroot_to: str | None = None,
    parent_registry_insecure: bool = False,
    target_registries_insecure: bool = False,
    dont_pull_base_image: bool = False,
    **kwargs: Any,
) -> BuildResults:
    """Run the workflow in a privileged container of ``build_image`` with kiln's native
    backend; ``push_buildroot_to`` (a registry) also gets the buildroot container as it
    was left, committed, for a later look at the build environment."""
    return _in_buildroot(
        build_image, source, image, parent_registry, target_registries, push_buildroot_to,
        parent_registry_insecure, target_registries_insecure, dont_pull_base_image, kwargs,
        hosts_docker=False,
    )  # fmt: skip


def build_image_using_hosts_docker(
    build_image: str,
    source: Mapping[str, Any] | SourceSpec,
    image: str,
    parent_registry: str | None = None,
    target_registries: list[str] | None = None,
    push_buildroot_to: str | None = None,
    parent_registry_insecure: bool = False,
    target_registries_insecure: bool = False,
    dont_pull_base_image: bool = False,
    **kwargs: Any,
) -> BuildResults:
    """Run the workflow in a container of ``build_image`` that is given the engine's socket:
    the image is built by, and stays in, that engine (the Docker backend)."""
    return _in_buildroot(
        build_image, source, image, parent_registry, target_registries, push_buildroot_to,
        parent_registry_insecure, target_registries_insecure, dont_pull_base_image, kwargs,
        hosts_docker=True,
    )  # fmt: skip


def _in_buildroot(
    build_image: str,
    source: Mapping[str, Any] | SourceSpec,
    image: str,
    parent_registry: str | None,
    target_registries: list[str] | None,
    push_buildroot_to: str | None,
    parent_registry_insecure: bool,
    target_registries_insecure: bool,
    dont_pull_base_image: bool,
    kwargs: dict[str, Any],
    *,
    hosts_docker: bool,
) -> BuildResults:
    """Shared by both container modes. kiln's own keywords: ``docker_base_url`` (the engine;
    default: docker-py's environment), ``output_dir`` (a host directory that is the
    container's working directory, so relative output paths of plugins land there),
    ``output`` (gets the container's log lines), ``container_options`` (more keywords for
    docker-py's ``containers.run``, overriding kiln's: where ``privileged`` cannot be had,
    say, the capabilities to give instead)."""
    import docker
    import docker.errors

    base_url: str | None = kwargs.pop("docker_base_url", None)
    output_dir: Path | None = kwargs.pop("output_dir", None)
    output: Callable[[str], None] = kwargs.pop("output", None) or (lambda line: None)
    options: dict[str, Any] = dict(kwargs.pop("container_options", None) or {})
    client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    shared = Path(tempfile.mkdtemp(prefix="kiln-buildroot-"))
    try:
        data = describe(source, image, parent_registry, target_registries,
                        parent_registry_insecure, target_registries_insecure,
                        dont_pull_base_image, kwargs)  # fmt: skip
        data["backend"] = "docker" if hosts_docker else "native"
        volumes = _share(data, shared)
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            volumes[str(output_dir.resolve())] = {"bind": f"{SHARED}/output", "mode": "rw"}
        if hosts_docker:
            socket = _socket_path(base_url)
            volumes[socket] = {"bind": "/var/run/docker.sock", "mode": "rw"}
        BuildDescription.from_dict(data)  # a bad description fails here, not in the container
        (shared / "build.json").write_text(json.dumps(data, indent=2))
        environment = {"KILN_ROOT": f"{SHARED}/root", "DOCKER_CONFIG": f"{SHARED}/docker-config"}
        if hosts_docker:
            environment["DOCKER_HOST"] = "unix:///var/run/docker.sock"
        try:
            container = client.containers.run(build_image, **{
                "command": ["kiln", "workflow", "run", f"{SHARED}/build.json",
                            "--results", f"{SHARED}/results.json"],
                "detach": True, "privileged": not hosts_docker, "network_mode": "host",
                "volumes": volumes, "environment": environment,
                "working_dir": f"{SHARED}/output" if output_dir is not None else SHARED,
                **options,
            })  # fmt: skip
        except docker.errors.DockerException as err:
            raise BuildrootError(f"cannot start buildroot {build_image}: {err}") from None
        try:
            tail: list[str] = []
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    tail = [*tail[-19:], line]
                    output(line)
            status = int(container.wait()["StatusCode"])
            results_file = shared / "results.json"
            if not results_file.is_file():
                raise BuildrootError(
                    f"buildroot {build_image} exited with {status} and wrote no results: "
                    + " | ".join(tail[-3:])
                )
            results = BuildResults.from_json(results_file.read_text())
            if push_buildroot_to:
                _push_buildroot(client, container, push_buildroot_to, image, results, output)
            return results
        finally:
            container.remove(force=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        client.close()


def _share(data: dict[str, Any], shared: Path) -> dict[str, dict[str, str]]:
    """Make what the description names on this host visible in the container, and point the
    description at it there; the bind mounts this needs."""
    volumes = {str(shared): {"bind": SHARED, "mode": "rw"}}
    source = data["source"]
    uri = str(source.get("uri", ""))
    local = uri.removeprefix("file://") if uri.startswith("file://") or uri.startswith("/") else ""
    if local:
        path = Path(local).resolve()
        if not path.exists():
            raise KilnError(f"source {uri}: no such directory")
        volumes[str(path)] = {"bind": f"{SHARED}/source", "mode": "ro"}
        source["uri"] = f"file://{SHARED}/source"
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    (shared / "docker-config").mkdir()
    if config.is_file():  # the caller's registry credentials, never written into build.json
        shutil.copyfile(config, shared / "docker-config" / "config.json")
    files = []
    for number, name in enumerate(data.get("plugin_files") or []):
        copy = shared / "plugins" / f"{number}-{Path(name).name}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(name, copy)
        files.append(f"{SHARED}/plugins/{copy.name}")
    data["plugin_files"] = files
    return volumes


def _socket_path(base_url: str | None) -> str:
    """The engine's socket on this machine (docker-py hides it behind http+docker://)."""
    url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not url.startswith("unix://"):
        raise BuildrootError(f"the engine at {url} has no local socket to give the buildroot")
    return url.removeprefix("unix://")


def _push_buildroot(
    client: Any,
    container: Any,
    registry: str,
    image: str,
    results: BuildResults,
    output: Callable[[str], None],
) -> None:
    """Commit the buildroot container and push it as ``REGISTRY/buildroot-NAME:TIME``."""
    name = Reference.parse(image).repository.rsplit("/", 1)[-1]
    repository = f"{registry}/buildroot-{name}"
    tag = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    container.commit(repository=repository, tag=tag)
    digest = ""
    for entry in client.api.push(repository, tag, stream=True, decode=True):
        if "error" in entry:
            raise BuildrootError(f"cannot push the buildroot to {registry}: {entry['error']}")
        digest = (entry.get("aux") or {}).get("Digest") or digest
        if entry.get("status"):
            output(str(entry["status"]))
    results.pushed.setdefault(registry, []).append(PushedImage(f"{repository}:{tag}", digest))
