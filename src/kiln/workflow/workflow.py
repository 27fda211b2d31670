"""The workflow: a source, then plugins phase by phase, then the exit plugins, always.

Phases run in order (pre-build, build, pre-publish, post-build). A plugin that fails and is
not allowed to fail stops the build there; one that is allowed to fail has its error
recorded and the build goes on. Exit plugins run after success, failure or cancellation
(SIGTERM, SIGINT), every one of them, and their failures are reported together.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from kiln.errors import KilnError
from kiln.reference import Reference
from kiln.workflow.description import BuildDescription, RegistrySpec
from kiln.workflow.dockerfile import EditableDockerfile
from kiln.workflow.engines import BuildSpec, ImageEngine
from kiln.workflow.plugin import (
    Phase,
    Plugin,
    PluginError,
    PluginRegistry,
    PluginSpec,
    parse_args,
)
from kiln.workflow.results import BuildResults, PluginRun, PushedImage, to_data
from kiln.workflow.source import Source, prepare_source

if TYPE_CHECKING:
    from kiln.engine.executor import Volume

R = TypeVar("R")

_BUILD_PHASES = (Phase.PRE_BUILD, Phase.BUILD, Phase.PRE_PUBLISH, Phase.POST_BUILD)


class BuildCancelled(BaseException):  # like KeyboardInterrupt: not caught as an error
    """A signal asked the build to stop; raised where the build is, caught by the workflow."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class _Stop(Exception):  # a plugin that may not fail failed: on to the exit phase
    pass


@dataclass
class _Configured:
    """A plugin entry ready to run: its class and checked arguments."""

    plugin: type[Plugin[Any, Any]]
    args: Any
    allowed_to_fail: bool


@dataclass
class _Shared:
    """What plugins hand to each other beyond their results."""

    build_args: dict[str, str] = field(default_factory=dict)
    volumes: list[Volume] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # names the image gets, pushed by tag_and_push


class BuildWorkflow:
    """One build of ``description``: ``run()`` returns its ``BuildResults``, never raises for a
    failed build (a bad description or plugin configuration raises before anything runs)."""

    def __init__(
        self,
        description: BuildDescription,
        *,
        engine: ImageEngine | None = None,
        plugins: PluginRegistry | None = None,
        workdir: Path | None = None,
        output: Callable[[str], None] | None = None,
    ) -> None:
        self.description = description
        self.registry = plugins or PluginRegistry.default(description.plugin_files)
        self.results = BuildResults(image=description.image, source_uri=description.source.uri)
        self._output = output
        self._phases = {phase: self._configure(phase) for phase in Phase}
        self._engine = engine
        self._opened_engine = False  # whether this workflow opened it, and so closes it
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kiln-workflow-"))
        self.shared = _Shared(build_args=dict(description.build_args))
        self._results: dict[type[Plugin[Any, Any]], Any] = {}
        self._source: Source | None = None
        self._dockerfile: EditableDockerfile | None = None
        self._context: Path | None = None

    # -- configuration -------------------------------------------------------------------

    def _configure(self, phase: Phase) -> list[_Configured]:
        specs = list(self.description.plugins.get(phase, ()))
        if phase is Phase.BUILD and not specs:
            specs = [PluginSpec("build")]
        configured = []
        for spec in specs:
            plugin = self.registry.get(spec.name)
            if plugin is None:
                if spec.required:
                    raise PluginError(f"{phase.config_key}: no plugin named {spec.name!r}")
                self.warn(f"{phase.config_key}: plugin {spec.name!r} is not installed, skipped")
                continue
            if phase not in plugin.phases:
                allowed = ", ".join(sorted(p.config_key for p in plugin.phases))
                raise PluginError(f"{phase.config_key}: plugin {spec.name} runs in {allowed}")
            allowed_to_fail = (
                plugin.allowed_to_fail if spec.is_allowed_to_fail is None
                else spec.is_allowed_to_fail
            )  # fmt: skip
            configured.append(_Configured(plugin, parse_args(plugin, spec.args), allowed_to_fail))
        return configured

    # -- what plugins use ----------------------------------------------------------------

    @property
    def engine(self) -> ImageEngine:
        if self._engine is None:
            self._engine = open_engine(self.description.backend, self.description.isolation)
            self._opened_engine = True
        return self._engine

    @property
    def source(self) -> Source:
        if self._source is None:
            raise KilnError("the source is not ready yet")
        return self._source

    @property
    def dockerfile(self) -> EditableDockerfile:
        if self._dockerfile is None:
            raise KilnError("the Dockerfile is not ready yet")
        return self._dockerfile

    @property
    def context(self) -> Path:
        return self._context or self.source.context

    @property
    def parent_registry(self) -> RegistrySpec | None:
        return self.description.parent_registry

    @property
    def target_registries(self) -> tuple[RegistrySpec, ...]:
        return self.description.target_registries

    def result_of(self, plugin: type[Plugin[Any, R]]) -> R | None:
        """What ``plugin`` returned in this build; None if it did not run or failed."""
        result: R | None = self._results.get(plugin)
        return result

    def add_context_file(self, name: str, data: bytes) -> str:
        """Put a file into the build context (a private copy of it, when the source is used
        in place, so the source is never modified); its path in the context."""
        if self._context is None and self.source.in_place:
            copy = self.workdir / "context"
            shutil.copytree(self.source.context, copy, symlinks=True)
            self._context = copy
        path = self.context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        # No ignore file may hide what a plugin adds: not the context's, not the one beside
        # the source's Dockerfile (the Docker backend reads that), not the workflow's copy
        # of it beside the edited Dockerfile (the native builder reads that).
        beside = self.source.dockerfile.relative_to(self.source.context)
        for ignore in (
            self.context / ".dockerignore",
            self.context / f"{beside}.dockerignore",
            self.dockerfile.path.with_name(self.dockerfile.path.name + ".dockerignore"),
        ):
            if ignore.is_file():
                with open(ignore, "a") as f:
                    f.write(f"\n!{name}\n")
        return name

    @property
    def image_id(self) -> str:
        """The built image's ID; "" before the build phase has made one."""
        return self.results.image_id

    @property
    def built_image(self) -> str:
        """The built image's ID; an error for plugins that run before there is one."""
        if not self.image_id:
            raise KilnError("no image has been built (the build phase has not run)")
        return self.image_id

    def set_image(self, image_id: str, digest: str = "") -> None:
        """Make ``image_id`` the build's image (a build plugin's or a squash's result)."""
        self.results.image_id = image_id
        self.results.image_digest = digest
        self._record_tags()

    def add_tags(self, names: list[str]) -> None:
        """More names for the image; they are tagged now and pushed by ``tag_and_push``."""
        for name in names:
            self.engine.tag(self.built_image, name)
        self.shared.tags.extend(n for n in names if n not in self.shared.tags)
        self._record_tags()

    def _record_tags(self) -> None:
        names = [self.description.image, *self.shared.tags]
        self.results.tags = list(dict.fromkeys(str(Reference.parse(n)) for n in names))

    def record_push(self, registry: str, name: str, digest: str) -> None:
        self.results.pushed.setdefault(registry, []).append(PushedImage(name, digest))

    def log(self, line: str) -> None:
        self.results.logs.append(line)
        if self._output is not None:
            self._output(line)

    def warn(self, message: str) -> None:
        self.results.warnings.append(message)
        self.log(f"warning: {message}")

    def build_spec(self) -> BuildSpec:
        """The build as the plugins have shaped it so far."""
        return BuildSpec(
            context=self.context, dockerfile=self.dockerfile.path,
            ignore_dockerfile=self.context / self.source.dockerfile.relative_to(
                self.source.context
            ),
            tags=(self.description.image,), build_args=dict(self.shared.build_args),
            target=self.description.target, no_cache=self.description.no_cache,
            volumes=tuple(self.shared.volumes),
            isolation=self.description.isolation,
            insecure_registries=tuple(
                r.host for r in (self.parent_registry, *self.target_registries)
                if r is not None and r.insecure
            ),
        )  # fmt: skip

    # -- running -------------------------------------------------------------------------

    def run(self) -> BuildResults:
        results = self.results
        results.started = time.time()
        clock = time.monotonic()
        try:
            with _signals_raise():
                try:
                    self._prepare()
                    for phase in _BUILD_PHASES:
                        self._run_phase(phase)
                except _Stop:
                    pass
                except BuildCancelled as cancel:
                    results.cancelled = True
                    self._fail(f"cancelled by {cancel.signal_name}")
                except KilnError as err:
                    self._fail(str(err))
            with _signals_deferred() as received:
                self._run_exit_phase()
            if received and not results.cancelled:
                results.cancelled = True
                self._fail(f"cancelled by {received[0]} while the exit plugins ran")
        finally:
            results.duration = time.monotonic() - clock
            if self._engine is not None and self._opened_engine:
                self._engine.close()
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return results

    def _prepare(self) -> None:
        source = prepare_source(self.description.source, self.workdir)
        self._source = source
        self.results.commit = source.commit
        copy = self.workdir / "Dockerfile"
        shutil.copyfile(source.dockerfile, copy)
        own_ignore = source.dockerfile.with_name(source.dockerfile.name + ".dockerignore")
        if own_ignore.is_file():
            shutil.copyfile(own_ignore, self.workdir / "Dockerfile.dockerignore")
        self._dockerfile = EditableDockerfile(copy, self.shared.build_args)
        self.results.base_image = self._dockerfile.base_image
        self.results.dockerfile = self._dockerfile.text

    def _run_phase(self, phase: Phase) -> None:
        for configured in self._phases[phase]:
            if not self._run_plugin(phase, configured) and not configured.allowed_to_fail:
                raise _Stop

    def _run_exit_phase(self) -> None:
        failures = []
        for configured in self._phases[Phase.EXIT]:
            if not self._run_plugin(Phase.EXIT, configured) and not configured.allowed_to_fail:
                failures.append(self.results.plugins[-1])
        if failures:
            self._fail("; ".join(f"{run.key}: {run.error}" for run in failures), exit=True)

    def _run_plugin(self, phase: Phase, configured: _Configured) -> bool:
        """Run one plugin and record it; whether it succeeded."""
        plugin = configured.plugin
        run = PluginRun(
            plugin.key, phase.value, time.time(), allowed_to_fail=configured.allowed_to_fail
        )
        self.results.plugins.append(run)
        clock = time.monotonic()
        self.log(f"running {phase.value} plugin {plugin.key}")
        try:
            result = plugin(self, configured.args).run()
        except BuildCancelled:
            run.error = "cancelled"
            run.duration = time.monotonic() - clock
            raise
        except Exception as err:
            run.error = str(err) if isinstance(err, KilnError) else f"{type(err).__name__}: {err}"
            run.duration = time.monotonic() - clock
            self.log(f"plugin {plugin.key} failed: {run.error}")
            if not configured.allowed_to_fail and phase is not Phase.EXIT:
                self._fail(f"plugin {plugin.key} failed: {run.error}")
            return False
        run.duration = time.monotonic() - clock
        if self._dockerfile is not None and phase is Phase.PRE_BUILD:
            self.results.dockerfile = self._dockerfile.text  # as the build will see it
        run.result = to_data(result)
        self._results[plugin] = result
        return True

    def _fail(self, message: str, *, exit: bool = False) -> None:
        results = self.results
        results.failed = True
        prefix = "exit plugins failed: " if exit else ""
        results.error = "; ".join(filter(None, (results.error, prefix + message)))


def open_engine(backend: str, isolation: str | None = None) -> ImageEngine:
    """The engine a description's ``backend`` names, from the environment's defaults; the
    native one runs images (``test_built_image``) with the isolation its builds use."""
    from kiln.workflow.engines import DockerEngine, NativeEngine

    if backend == "docker":
        import docker

        return DockerEngine(docker.from_env())
    from kiln.store import Store

    return NativeEngine(Store(), isolation)


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise ``BuildCancelled`` in the main thread while the build runs."""

    def cancel(number: int, frame: FrameType | None) -> None:
        raise BuildCancelled(signal.Signals(number).name)

    with _handlers(cancel):
        yield


@contextlib.contextmanager
def _signals_deferred() -> Iterator[list[str]]:
    """While exit plugins run, signals are only noted (their names), so that cleanup is
    not cut short."""
    received: list[str] = []
    with _handlers(lambda number, frame: received.append(signal.Signals(number).name)):
        yield received


@contextlib.contextmanager
def _handlers(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; elsewhere the caller handles them
        return
    previous = {number: signal.signal(number, handler) for number in _SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


_SIGNALS = (signal.SIGTERM, signal.SIGINT)
