"""Executing a build plan natively: each step on an overlay of its parent layers.

A stage's state is its layers (diff_ids, each an unpacked snapshot), its image config and
its history. A step that may change files runs on an overlay mount whose upper dir starts
empty; afterwards the upper dir *is* the step's diff: it becomes a layer tar (overlay
whiteouts turned into OCI ones) and, renamed, the snapshot of that layer.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, cast

from kiln.context import (
    ContextScan,
    DigestCache,
    IgnoreRules,
    PatternMatcher,
    load_ignore,
)
from kiln.dockerfile import BuildOptions, Platform, load_dockerfile, plan_build
from kiln.dockerfile.config import (
    ImageConfig,
    apply_instruction,
    from_oci,
    to_oci,
)
from kiln.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Instruction,
    Onbuild,
    Run,
    Workdir,
)
from kiln.dockerfile.mounts import Mount
from kiln.dockerfile.plan import BaseImageConfig, BuildPlan, StagePlan, Step, join_workdir
from kiln.engine.copying import (
    Deferred,
    Manifest,
    Reuse,
    copy_deferred,
    copy_into,
    glob,
    makedirs,
    write_file,
)
from kiln.engine.history import created_by
from kiln.engine.layering import Layering, check_layering, layer_groups, load_marked
from kiln.engine.network import DEFAULT, HOST, MODES, PrivateNetwork
from kiln.engine.remote import (
    Download,
    GitSource,
    HttpCache,
    check_checksum,
    checkout_git,
    git_source,
    is_url,
    resolve_git,
    url_filename,
)
from kiln.engine.runtime import (
    LIMITS_NEED_OCI,
    Limits,
    LiveProcesses,
    OutOfMemory,
    ProcessSpec,
    RuntimeMount,
    check_isolation,
    default_isolation,
    resolve_user,
    run,
)
from kiln.engine.snapshots import Snapshots, unpack_layer
from kiln.engine.snapshotter import mounted, snapshotter
from kiln.engine.workspace import Workspace, reclaim, workspace
from kiln.epoch import NAME as EPOCH
from kiln.epoch import rfc3339, source_date_epoch
from kiln.errors import DockerfileError, KilnError
from kiln.oci.layer import (
    HashingWriter,
    Unchanged,
    is_opaque,
    is_whiteout,
    open_decompressed,
    splice_delta_layer,
    splice_dir_layer,
    write_dir_layer,
    written_by_gnu_tar,
)
from kiln.oci.objects import (
    CONFIG,
    LAYER,
    Descriptor,
    canonical_json,
    image_manifest,
    sha256_digest,
)
from kiln.platform import emulator_hint, runs_here
from kiln.reference import Reference
from kiln.store import Store, StoredImage, merge_layers
from kiln.store.store import LastCopy
from kiln.tree import Owner, Tree, TreeError, opened

Output = Callable[[str], None]
_TAIL_LINES = 10
_PARALLEL_STAGES = 4


class BuildError(DockerfileError):
    """A step that failed: names the Dockerfile line, the command and why."""


@dataclass(frozen=True)
class Volume:
    """A host file or directory bound into every RUN step (``--volume HOST:CONTAINER[:ro]``,
    as buildah and incubator have them): secrets, repository definitions, caches that RUN
    steps may read (or, unless ``readonly``, write) but no layer ever captures."""

    source: Path
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class BuildRequest:
    """One ``kiln build``: the context, the Dockerfile and docker build's options."""

    context: Path
    dockerfile: Path | None = None
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = DEFAULT  # RUN steps' network: default (a private one), host or none
    allow: tuple[str, ...] = ()  # entitlements, as BuildKit's: network.host, security.insecure
    no_cache: bool = False
    isolation: str | None = None  # "oci" or "chroot"; None: default_isolation(), once a build
    # --secret id=NAME,src=FILE: a file, or (env=VAR) the value itself, written nowhere
    # but the build's private tmpfs
    secrets: Mapping[str, Path | bytes] = field(default_factory=dict)
    ssh: Mapping[str, Path] = field(default_factory=dict)  # --ssh ID=AGENT_SOCKET
    pull: bool = False  # check the registry for a newer base image even if one is stored
    insecure_registries: tuple[str, ...] = ()  # plain HTTP or unverified TLS allowed
    parent_registry: str = ""  # pull base images from here, whatever registry they name
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host NAME:ADDRESS, for RUN steps
    shm_size: int = 64 << 20  # --shm-size: bytes of /dev/shm in RUN steps
    platform: Platform | None = None  # --platform: the image's (default: this machine's)
    volumes: tuple[Volume, ...] = ()  # --volume HOST:CONTAINER[:ro|rw], for RUN steps
    limits: Limits = field(default_factory=Limits)  # --memory, --cpu-shares...: RUN steps
    layering: Layering = field(default_factory=Layering)  # --squash, --commit explicit...
    cache_from: tuple[str, ...] = ()  # images whose inline cache this build may use


@dataclass
class _State:
    """Where a stage has got to."""

    layers: list[Descriptor]
    config: ImageConfig
    history: list[dict[str, object]]
    platform: Platform
    key: str  # the cache key of the filesystem so far
    cmd_set: bool = False
    args: list[str] = field(default_factory=list)  # the stage's ARG names, in order
    # The uncompressed digest of each layer: the layer's own digest unless it was pulled
    # compressed from a registry.
    diff_ids: list[str] = field(default_factory=list)
    # The step of this stage that made each layer; None for its base's (for layer control).
    made_by: list[Step | None] = field(default_factory=list)
    # (cache key, index of the layer it made or -1) of each layer step so far: the inline
    # cache an image carries with BUILDKIT_INLINE_CACHE=1.
    cache: list[tuple[str, int]] = field(default_factory=list)
    # Whether its files came, at some step, from a --cache-from image's layers: what later
    # steps make of them is this build's alone, never the store's cache.
    imported: bool = False

    def copy(self) -> _State:
        state = _State(list(self.layers), self.config, list(self.history), self.platform, self.key)
        state.args = list(self.args)
        state.diff_ids = list(self.diff_ids)
        state.cache = list(self.cache)
        state.imported = self.imported
        return state


class Builder:
    """Builds images into a store; ``output`` receives progress lines."""

    def __init__(self, store: Store, output: Output = lambda line: None) -> None:
        self.store = store
        self.snapshots = Snapshots(store)
        self.output = output
        self.pull_errors: dict[str, str] = {}  # base images that could not be pulled, why
        (store.root / "work").mkdir(mode=0o700, exist_ok=True)
        reclaim(store.root)  # what builds killed before they could clean up left behind

    @property
    def kind(self) -> str:
        """The snapshotter, probed on first use: a fully cached build never mounts."""
        return snapshotter(self.store.root / "work", self.output)

    def build(self, request: BuildRequest, scan: ContextScan | None = None) -> StoredImage:
        """Build ``request``. ``scan`` is a scan of its context the caller started early
        (the CLI does, so that the walk overlaps its imports); it is closed here."""
        dockerfile_path = request.dockerfile or request.context / "Dockerfile"
        ignore = load_ignore(request.context, dockerfile_path)
        if scan is None:
            scan = ContextScan(request.context, ignore.matcher if ignore else None)
        with scan:
            # Resolved once: every RUN step, and the checks below, go by the same answer.
            request = replace(request, isolation=request.isolation or default_isolation())
            request = replace(request, volumes=_checked_volumes(request))
            epoch = source_date_epoch(request.build_args)
            if epoch is not None and EPOCH not in request.build_args:
                # As Buildx passes it on: a stage's ARG SOURCE_DATE_EPOCH shows it to RUN.
                request = replace(request, build_args={**request.build_args, EPOCH: str(epoch)})
            _check_limits(request)
            # --cache-from serves this build only: a poisoned image's cache must not reach
            # the store-wide cache, and through it, builds that never asked for it.
            imported: dict[str, tuple[str, int, float]] = {}
            for name in request.cache_from:
                imported.update(self.import_cache(name, request))
            marked = frozenset[int]()  # first lines of the instructions marked #!COMMIT
            if request.layering.explicit:
                document, marked = load_marked(dockerfile_path, str(dockerfile_path))
            else:
                document = load_dockerfile(dockerfile_path, display_name=str(dockerfile_path))
            check_layering(request.layering, document)
            plan = plan_build(
                document,
                BuildOptions(dict(request.build_args), request.target, request.platform),
                lambda name, platform: self._resolve_base(name, platform, request),
            )
            for warning in plan.warnings:
                self.output(f"warning: {warning}")
            _check_run_steps(plan, request, str(dockerfile_path))
            _check_emulation(plan, str(dockerfile_path))
            with self.store.writing(), workspace(self.store.root, "build") as work:
                run = _Run(self, plan, request, ignore, scan, work, str(dockerfile_path))
                run.imported = imported
                try:
                    state = run.execute()
                finally:
                    run.network.close()
                final = next(s for s in plan.stages if s.stage.index == plan.target)
                groups = layer_groups(request.layering, document, final, state.made_by, marked)
                if not groups:
                    return self._commit(state, request, run.build_time())
                image = self._commit(state, replace(request, tags=()), run.build_time())
            tags = [Reference.parse(t) for t in request.tags]
            return merge_layers(self.store, image.manifest_digest, groups, tags=tags)

    def import_cache(self, name: str, request: BuildRequest) -> dict[str, tuple[str, int, float]]:
        """The inline cache of image ``name`` (from the store, else its registry): step
        keys with the layers they made (diff_id, size, when), for this build to reuse, as
        ``--cache-from`` does with BuildKit's inline cache. Their layers go into the store
        (blobs are checked by content); the keys do not. A missing image, or one without
        a usable cache, is a warning, as in docker: the build goes on without it."""
        try:
            image = self.store.image(name)
        except KilnError:
            try:
                image = self.pull(name, request.platform or Platform.host(), request)
            except KilnError as err:
                self.output(f"warning: --cache-from {name}: {err}")
                return {}
        entries = _inline_cache(image.config.get(INLINE_CACHE), len(image.layers))
        if not entries:
            self.output(f"warning: --cache-from {name}: the image carries no inline cache "
                        "(build it with --build-arg BUILDKIT_INLINE_CACHE=1)")  # fmt: skip
            return {}
        layers, diff_ids = image.layers, image.diff_ids
        imported: dict[str, tuple[str, int, float]] = {}
        for key, index in entries:
            if index < 0:
                imported[key] = ("", 0, image.created)
                continue
            diff_id = diff_ids[index]
            if not self.store.has_blob(diff_id):  # pulled compressed: steps use it unpacked
                blob = self.store.blob_path(layers[index].digest)
                with open_decompressed(blob) as stream:
                    self.store.put_blob_stream(
                        lambda out: shutil.copyfileobj(stream, out), expected=diff_id
                    )
            size = os.path.getsize(self.store.blob_path(diff_id))
            imported[key] = (diff_id, size, image.created)
        self.output(f"cache from {name}: {len(entries)} steps")
        return imported

    def _resolve_base(
        self, name: str, platform: Platform, request: BuildRequest
    ) -> BaseImageConfig | None:
        """A base image's config: from the store, else (or with ``--pull``) pulled first."""
        try:
            image = None if request.pull else self.store.image(name)
        except KilnError:
            image = None
        if image is not None and not _is_for(image, platform):
            image = None  # stored for another platform: fetch the one this build is for
        if image is None:
            try:
                image = self.pull(name, platform, request)
            except KilnError as err:
                self.pull_errors[name] = str(err)
                return None
        config = from_oci(image.config.get("config") or {})
        return BaseImageConfig(config.env, config.working_dir, config.user, config.onbuild)

    def pull(self, name: str, platform: Platform, request: BuildRequest) -> StoredImage:
        from kiln.registry import RegistryClient, pull_image

        named = Reference.parse(name)
        reference = named
        if request.parent_registry:  # atomic-reactor's parent_registry
            reference = replace(named, registry=request.parent_registry)
        insecure = True if reference.registry in request.insecure_registries else None
        self.output(f"pulling {reference.familiar}")
        with RegistryClient(reference.registry, insecure=insecure) as client:
            image = pull_image(self.store, reference, client, platform=platform, output=self.output)
        if reference != named and named.tag:
            self.store.tag(image.manifest_digest, named)  # found under the name it was asked by
            image = self.store.image(image.manifest_digest)
        return image

    def _commit(self, state: _State, request: BuildRequest, built: float) -> StoredImage:
        """The image: its config and this build's history entries dated ``built``, so that a
        build whose every step came from the cache gives the same image again (as BuildKit)."""
        config = state.config
        if request.labels:
            config = replace(config, labels={**config.labels, **request.labels})
        created = _timestamp(built)
        for entry in state.history:
            if entry.get("created") is None:
                entry["created"] = created
        image_config: dict[str, object] = {
            "architecture": state.platform.architecture,
            "os": state.platform.os,
            **({"variant": state.platform.variant} if state.platform.variant else {}),
            "created": created,
            **({"author": config.author} if config.author else {}),
            "config": to_oci(config),
            "rootfs": {"type": "layers", "diff_ids": list(state.diff_ids)},
            "history": state.history,
        }
        if _wants_inline_cache(request):
            image_config[INLINE_CACHE] = [[key, index] for key, index in state.cache]
        config_bytes = canonical_json(image_config)
        digest = self.store.put_blob(config_bytes)
        manifest = image_manifest(Descriptor(CONFIG, digest, len(config_bytes)), state.layers)
        return self.store.add_image(manifest, [Reference.parse(t) for t in request.tags])


class _Run:
    """One execution of a plan."""

    def __init__(
        self,
        builder: Builder,
        plan: BuildPlan,
        request: BuildRequest,
        ignore: IgnoreRules | None,
        scan: ContextScan,
        work: Workspace,
        dockerfile: str,
    ) -> None:
        cache = DigestCache(builder.store.root / "cache" / "context.db")
        try:
            self.context = scan.snapshot(cache)
        finally:
            cache.close()
        self.builder = builder
        self.store = builder.store
        self.snapshots = builder.snapshots
        self.plan = plan
        self.request = request
        self.ignore = ignore
        self.workspace = work
        self.work = work.path
        self.dockerfile = dockerfile
        self.states: dict[int, _State] = {}
        self.done = 0
        self.started = time.time()
        self.epoch = source_date_epoch(request.build_args)  # clamps every time the image holds
        self.fresh = False  # whether any step ran rather than came from the cache
        self.cached_times: list[float] = []
        self.counter = threading.Lock()
        self.current = threading.local()  # .number: the step this thread is running
        self.failed = threading.Event()
        self.live = LiveProcesses()  # RUN processes now running, stopped when a stage fails
        # Secret values (4 characters or more) a step prints are masked in the log and in
        # errors: a secret should reach no log, whatever the step does with it.
        self.secret_values = sorted(
            {v for path in request.secrets.values() for v in _secret_texts(path) if len(v) >= 4},
            key=len, reverse=True,
        )  # fmt: skip
        self.pulling = threading.Lock()  # parallel stages naming one image pull it once
        # What ADD fetched for its cache key, for the step to copy without asking again.
        self.downloads: dict[tuple[str, str], Download] = {}  # by (URL, --checksum)
        self.commits: dict[GitSource, str] = {}
        self.imported: dict[str, tuple[str, int, float]] = {}  # --cache-from's, this build's
        self.network = PrivateNetwork(self.work, builder.output)  # made when first needed

    @functools.cached_property
    def visible(self) -> set[str] | None:
        """The context paths .dockerignore lets through; None without rules, when every
        path is (and the entries of an unchanged context need not be read)."""
        ignore = self.ignore
        return set(self.context.paths) if ignore is not None and ignore.matcher.patterns else None

    def build_time(self) -> float:
        """When this image was built: SOURCE_DATE_EPOCH if set; else now, or, if every step
        came from the cache, when the build that made those layers ran."""
        if self.epoch is not None:
            return self.epoch
        if self.fresh or not self.cached_times:
            return self.started
        return max(self.cached_times)

    def execute(self) -> _State:
        """Every stage once all it depends on is built; independent stages in parallel."""
        pending = {stage.stage.index: stage for stage in self.plan.stages}
        running: dict[Future[_State], int] = {}
        with ThreadPoolExecutor(max_workers=_PARALLEL_STAGES) as pool:
            try:
                while pending or running:
                    for index, stage in list(pending.items()):
                        if all(dep in self.states for dep in stage.dependencies):
                            del pending[index]
                            running[pool.submit(self.stage, stage)] = index
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        self.states[running.pop(future)] = future.result()
            except BaseException:
                self.failed.set()  # stages still running stop at their next step...
                self.live.stop_all()  # ... and the RUN steps they are in stop now
                raise
        return self.states[self.plan.target]

    # -- stages

    def stage(self, stage: StagePlan) -> _State:
        """Build one stage's steps in order. Progress as BuildKit's: the steps that make a
        layer (and FROM an image) are numbered within their stage, ``[build 2/5]``, each
        ending ``DONE 1.2s``, ``CACHED`` or ``ERROR``; metadata steps print nothing."""
        counter = _StageCounter(stage, named=len(self.plan.dockerfile.stages) > 1)
        if counter.from_image:
            with self.numbered(counter.header(f"FROM {stage.base}")):
                state = self.base(stage)
        else:
            state = self.base(stage)
        state.made_by = [None] * len(state.layers)
        for step in stage.steps:
            if self.failed.is_set():
                raise KilnError("build cancelled: another stage failed")
            self.current.state = state
            if _makes_layer(step):
                onbuild = "ONBUILD " if step.onbuild else ""
                with self.numbered(counter.header(onbuild + step.instruction.source)):
                    self.step(state, step)
            else:
                self.step(state, step)
            state.made_by += [step] * (len(state.layers) - len(state.made_by))
        state.config = replace(state.config, env=tuple(f"{k}={v}" for k, v in stage.env))
        return state

    @contextmanager
    def numbered(self, header: str) -> Iterator[None]:
        """A step shown with a number of its own (``#7``: numbers run across the build), its
        output lines under that number and its end: ``CACHED``, ``DONE 1.2s`` or ``ERROR``."""
        with self.counter:
            self.done += 1
            number = self.current.number = self.done
        self.current.cached = False
        self.builder.output(f"#{number} {header}")
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.builder.output(f"#{number} ERROR")
            raise
        if not self.current.cached:  # a cached step said so already
            self.builder.output(f"#{number} DONE {time.monotonic() - started:.1f}s")

    def base(self, stage: StagePlan) -> _State:
        if stage.base_stage is not None:
            parent = self.states[stage.base_stage].copy()
            parent.config = replace(parent.config, onbuild=())
            return parent
        if stage.base.lower() == "scratch":
            return _State([], ImageConfig(working_dir="/"), [], stage.platform, "scratch")
        try:
            image = self.store.image(stage.base)
        except KilnError:
            why = self.builder.pull_errors.get(stage.base, "")
            raise self.error(
                stage.stage.from_,
                f"base image {stage.base!r} is not in kiln's store"
                + (f" and cannot be pulled: {why}" if why else ""),
                "make it with kiln import or kiln load, or push it to a registry you can reach",
            ) from None
        config = from_oci(image.config.get("config") or {})
        platform = Platform(
            image.config.get("os", "linux"),
            image.config.get("architecture", stage.platform.architecture),
            image.config.get("variant", ""),
        )
        if not _is_for(image, stage.platform):
            why = self.builder.pull_errors.get(stage.base, "")
            raise self.error(
                stage.stage.from_,
                f"base image {stage.base!r} is for {platform}, not {stage.platform}"
                + (f", and cannot be pulled for it: {why}" if why else ""),
                f"kiln pull --platform {stage.platform} {stage.base}",
            )
        return _State(
            image.layers, replace(config, onbuild=()), list(image.config.get("history") or []),
            platform, image.manifest_digest, diff_ids=list(image.diff_ids),
        )  # fmt: skip

    # -- steps

    def step(self, state: _State, step: Step) -> None:
        instruction = step.instruction
        if isinstance(instruction, Run):
            self.layer_step(state, step, self.run_step, self.run_key(state, step))
        elif isinstance(instruction, Copy | Add):
            self.layer_step(state, step, self.copy_step, self.copy_key(step))
        elif isinstance(instruction, Workdir):
            path = join_workdir(step.workdir, instruction.path)
            key: dict[str, object] = {"workdir": path, "user": state.config.user}
            # As BuildKit: a WORKDIR other than / is a layer even where the directory
            # exists already (the empty tar, sha256:5f70bf18...).
            self.layer_step(state, step, self.workdir_step, key, keep_empty=path != "/")
            state.config, state.cmd_set = apply_instruction(
                state.config, instruction, state.cmd_set
            )
        else:
            if isinstance(instruction, Arg):
                state.args.extend(a.key for a in instruction.args if a.key not in state.args)
            state.config, state.cmd_set = apply_instruction(
                state.config, instruction, state.cmd_set
            )
            if isinstance(instruction, Onbuild):
                return  # BuildKit records a trigger in the config only, not in the history
            command = state.config.cmd if isinstance(instruction, Cmd) else state.config.entrypoint
            text = created_by(instruction, command=command or ())
            state.history.append(_entry(text, empty_layer=True))

    def layer_step(
        self,
        state: _State,
        step: Step,
        action: Callable[[_State, Step, Path], None],
        key_parts: dict[str, object],
        *,
        keep_empty: bool = False,
    ) -> None:
        """Run ``action`` on an overlay of ``state``'s layers and commit what it changed,
        unless the cache has the layer a step with the same key made. A step that changed
        nothing adds no layer, unless ``keep_empty``: then an empty one.

        ``COPY --link`` makes a layer of its own: written into an empty directory, keyed
        without its parent, so it stays cached whatever changes below it.
        """
        linked = isinstance(step.instruction, Copy) and step.instruction.link
        parent = "link" if linked else state.key
        # The epoch changes the layer's mtimes; keys without one stay as they were.
        epoch = {} if self.epoch is None else {"epoch": self.epoch}
        key = sha256_digest(canonical_json({"parent": parent, **key_parts, **epoch}))
        # The same step with other files: a COPY that misses the cache reuses its last copy.
        self.current.copy_step = (
            sha256_digest(canonical_json({"parent": parent, **key_parts, **epoch, "files": ""}))
            if "files" in key_parts else None
        )  # fmt: skip
        entry = _entry(self.history_text(state, step))
        if self.reads_imported(step):
            state.imported = True
        cached = None
        if not self.request.no_cache:
            cached = self.store.cached_layer(key)
            if cached is None and key in self.imported:
                cached = self.imported[key]
                state.imported = True
        if cached is not None:
            self.builder.output(f"#{self.current.number} CACHED")
            self.current.cached = True
            diff_id, size, built = cached
            with self.counter:
                self.cached_times.append(built)
            self.add_layer(state, entry, diff_id, size)
        else:
            run = self.run_linked if linked else self.run_on_overlay
            diff_id, size = run(state, step, action)
            if not diff_id and keep_empty:
                diff_id, size = self.empty_layer()
            if state.imported:  # made from an imported cache's files: this build's only
                self.imported[key] = (diff_id, size, self.started)
            else:
                self.store.remember_layer(key, diff_id, size, self.started)
            self.fresh = True
            self.add_layer(state, entry, diff_id, size)
        state.cache.append((key, len(state.layers) - 1 if diff_id else -1))
        state.key = sha256_digest(f"{state.key} {key}".encode()) if linked else key

    def reads_imported(self, step: Step) -> bool:
        """Whether ``step`` reads a stage whose files came from an imported cache (COPY
        --from, RUN --mount from=)."""
        instruction = step.instruction
        names = [m.from_ for m in instruction.resolved_mounts] if isinstance(
            instruction, Run
        ) else [instruction.from_] if isinstance(instruction, Copy) else []  # fmt: skip
        stages = [self.plan.dockerfile.stage(name) for name in names if name]
        return any(
            found is not None and found.index in self.states and self.states[found.index].imported
            for found in stages
        )

    def run_linked(
        self, state: _State, step: Step, action: Callable[[_State, Step, Path], None]
    ) -> tuple[str, int]:
        """(diff_id, size) of ``action`` run on an empty directory: a ``--link`` layer."""
        upper = Path(tempfile.mkdtemp(prefix="upper-", dir=self.work))
        upper.chmod(0o755)
        try:
            action(state, step, upper)
            if not any(upper.iterdir()):
                return "", 0
            digest, size = self.store.put_blob_stream(
                lambda out: write_dir_layer(upper, out, clamp=self.epoch)  # type: ignore[arg-type]
            )
            self.snapshots.adopt(upper, digest)
            return digest, size
        finally:
            if upper.exists():
                shutil.rmtree(upper, ignore_errors=True)

    def empty_layer(self) -> tuple[str, int]:
        """(diff_id, size) of the layer with nothing in it: a tar of two zero blocks."""

        def write(out: HashingWriter) -> None:
            out.write(bytes(1024))

        digest, size = self.store.put_blob_stream(write)
        empty = Path(tempfile.mkdtemp(prefix="upper-", dir=self.work))
        empty.chmod(0o755)
        self.snapshots.adopt(empty, digest)
        return digest, size

    def history_text(self, state: _State, step: Step) -> str:
        instruction = step.instruction
        if isinstance(instruction, Run):
            env = dict(step.env)
            build_args = {name: env.get(name, "") for name in state.args}
            return created_by(
                instruction, run_args=_run_args(instruction, state.config), build_args=build_args
            )
        if isinstance(instruction, Workdir):
            return created_by(instruction, workdir=join_workdir(step.workdir, instruction.path))
        return created_by(instruction)

    def add_layer(self, state: _State, entry: dict[str, object], diff_id: str, size: int) -> None:
        if diff_id:
            state.layers.append(Descriptor(LAYER, diff_id, size))
            state.diff_ids.append(diff_id)
            state.history.append(entry)
        else:
            state.history.append({**entry, "empty_layer": True})

    def run_on_overlay(
        self, state: _State, step: Step, action: Callable[[_State, Step, Path], None]
    ) -> tuple[str, int]:
        """(diff_id, size) of what ``action`` changed; ('', 0) when it changed nothing."""
        upper = Path(tempfile.mkdtemp(prefix="upper-", dir=self.work))
        upper.chmod(0o755)  # the upper dir's own mode is what "/" looks like in the step
        try:
            work = Path(tempfile.mkdtemp(prefix="ovl-", dir=self.work))
            merged = self.work / f"merged-{uuid.uuid4().hex[:8]}"
            merged.mkdir()
            lowers = self.snapshots.lowers([layer.digest for layer in state.layers])
            kind = self.builder.kind
            # Directory copies into directories the step creates need no overlay: they are
            # made in the upper dir once it is unmounted, at twice the speed (see copy_into).
            deferred: Deferred | None = [] if kind == "overlay" else None
            self.current.deferred = deferred
            try:
                with mounted(lowers, upper, work, merged, kind=kind):
                    action(state, step, merged)
                copied = self.copy_deferred(deferred or [], upper)
            finally:
                self.current.deferred = None
            shutil.rmtree(work, ignore_errors=True)
            if not any(upper.iterdir()):
                return "", 0
            unchanged = _same_as_lower(lowers)
            if copied.delta:  # (the step's record stays the whole copy's, deltas' base)
                digest, size = self.store.put_blob_stream(
                    lambda hashing: self.write_delta(copied, upper, hashing, unchanged)
                )
                self.snapshots.adopt_delta(upper, digest, copied.delta)
                return digest, size
            gnu_tar = written_by_gnu_tar(upper, overlay=True, unchanged=unchanged)

            def write(hashing: HashingWriter) -> None:
                out = cast(BinaryIO, hashing)  # the writers take a file; this one hashes
                # Most of an incremental copy's layer is the last one's: its entries are
                # taken from there as they are, when GNU tar wrote both.
                if copied.kept and copied.previous and copied.previous.gnu_tar and gnu_tar:
                    old = self.store.blob_path(copied.previous.layer)
                    if old.exists() and splice_dir_layer(
                        upper, out, old, copied.kept, clamp=self.epoch
                    ):
                        return
                write_dir_layer(upper, out, overlay=True, unchanged=unchanged, clamp=self.epoch)

            digest, size = self.store.put_blob_stream(write)
            self.snapshots.adopt(upper, digest)
            copy_step = getattr(self.current, "copy_step", None)
            if copied.manifests and copy_step:
                self.store.remember_copy(copy_step, digest, copied.manifests, gnu_tar=gnu_tar)
            return digest, size
        finally:
            if upper.exists():
                shutil.rmtree(upper, ignore_errors=True)

    def write_delta(
        self, copied: _Copied, delta: Path, hashing: HashingWriter, unchanged: Unchanged
    ) -> None:
        """The layer tar of a copy made as a delta: spliced from its base's, or written
        from the two mounted as one where the splice cannot be made."""
        out = cast(BinaryIO, hashing)  # the writers take a file; this one hashes
        old = self.store.blob_path(copied.delta)
        if old.exists() and splice_delta_layer(delta, out, old, clamp=self.epoch):
            return
        with self.delta_view(copied.delta, delta) as merged:
            write_dir_layer(merged, out, overlay=True, unchanged=unchanged, clamp=self.epoch)

    @contextmanager
    def delta_view(self, base: str, delta: Path) -> Iterator[Path]:
        """A step's upper dir made as a delta, mounted over its base: the layer it stands
        for, for the block, to be written out as a tar."""
        view = Path(tempfile.mkdtemp(prefix="delta-", dir=self.work))
        (view / "upper").mkdir()
        (view / "work").mkdir()
        (view / "merged").mkdir()
        try:
            with mounted([self.snapshots.path(base), delta], view / "upper", view / "work",
                         view / "merged"):  # fmt: skip
                yield view / "merged"
        finally:
            shutil.rmtree(view, ignore_errors=True)

    def copy_deferred(self, deferred: Deferred, upper: Path) -> _Copied:
        """The deferred directory copies of a step, written into its upper dir; each
        reuses what the step's last run copied to the same place, if its snapshot is here."""
        copied = _Copied()
        copy_step = getattr(self.current, "copy_step", None)
        last = self.store.last_copy(copy_step) if copy_step and deferred else None
        if last is not None and self.snapshots.path(last.layer).is_dir():
            copied.previous = last
        with ExitStack() as stack:
            context = stack.enter_context(Tree(self.request.context))
            layer = stack.enter_context(Tree(upper))
            old = None
            if copied.previous is not None:
                old = stack.enter_context(Tree(self.snapshots.path(copied.previous.layer)))
            for copy in deferred:
                remembered = copied.previous.copies.get(copy.target) if copied.previous else None
                manifest = remembered[1] if remembered and remembered[0] == copy.owner else None
                previous_dir = None
                if old is not None and manifest is not None and old.is_dir(copy.target):
                    previous_dir = stack.enter_context(
                        opened(old.directory(copy.target, links=False))
                    )
                reuse = Reuse(previous_dir, manifest or {}, self.context.by_path,
                              self.context.hard_links if copy.plain else ())  # fmt: skip
                # A step that is this one copy, as last time: only its changes are written,
                # to be mounted over the last snapshot.
                reuse.delta = bool(
                    previous_dir is not None and copied.previous and copied.previous.dirs
                    and copied.previous.gnu_tar and len(deferred) == 1 and copy.exclude is None
                    and not copy.over_lower
                    and _holds_only(upper, copy.target, upper=True)
                    and _holds_only(self.snapshots.path(copied.previous.layer), copy.target)
                )  # fmt: skip
                copied.manifests[copy.target] = (
                    copy.owner,
                    copy_deferred(copy, context, layer, reuse),
                )
                if reuse.delta and copied.previous:
                    copied.delta = copied.previous.layer
                prefix = copy.target + "/" if copy.target else ""
                copied.kept |= {prefix + inner for inner in reuse.linked}
        return copied

    def run_key(self, state: _State, step: Step) -> dict[str, object]:
        """What a RUN's result depends on. Volumes count by how they are bound (source path,
        target, read-only), not by what they hold, as secrets: a file a volume lends a step
        may change without the step running again (``--no-cache`` runs it).

        Resource limits (``--memory``, ``--cpu-shares``...) are not part of it, as in docker's
        builder, which keys a step by its container config and not by the host config the
        limits are in (BuildKit has no per-build limits): they bound how a step runs, not
        what it makes, and a step that fails under a limit caches nothing."""
        instruction = step.instruction
        assert isinstance(instruction, Run)
        volumes = [[str(v.source), v.target, v.readonly] for v in self.request.volumes]
        relative = [
            _mount_target(m, step.workdir)
            for m in instruction.resolved_mounts
            if _mount_target(m, step.workdir) != m.target
        ]
        return {
            "run": _run_args(instruction, state.config),
            "env": [f"{k}={v}" for k, v in step.env],
            "user": state.config.user,
            "workdir": step.workdir,
            "network": instruction.network,
            "security": instruction.security,
            "mounts": [self.mount_key(m) for m in instruction.resolved_mounts],
            # relative targets by where they land: the step differs from one that put them at /
            **({"targets": relative} if relative else {}),
            # as in BuildKit's exec op: what the step could see of these is part of its key
            **({"build_network": self.request.network} if self.request.network != DEFAULT else {}),
            **({"hosts": list(self.request.extra_hosts)} if self.request.extra_hosts else {}),
            **({"shm": self.request.shm_size} if self.request.shm_size != 64 << 20 else {}),
            **({"volumes": volumes} if volumes else {}),
        }

    def mount_key(self, mount: Mount) -> str:
        """A mount in a RUN's cache key: for a bind, what it binds (context files' digests,
        or the stage's key) as well as how; caches, tmpfs and secrets only by how."""
        if mount.type != "bind":
            return repr(mount)
        if mount.from_:
            found = self.plan.dockerfile.stage(mount.from_)
            origin = self.states[found.index].key if found and found.index in self.states else (
                self.store.resolve(mount.from_)
            )  # fmt: skip
            return f"{mount!r} {origin}"
        source = os.path.normpath("/" + mount.source).lstrip("/")
        return f"{mount!r} {self.context.files_digest(source)}"

    def copy_key(self, step: Step) -> dict[str, object]:
        """What a COPY or ADD reads: its files' digests (not mtimes), or the source stage."""
        instruction = step.instruction
        assert isinstance(instruction, Copy | Add)
        parts: dict[str, object] = {
            "kind": instruction.name,
            "dest": instruction.dest,
            "workdir": step.workdir,
            "chown": instruction.chown,
            "chmod": instruction.chmod,
            "inline": [(f.name, f.content) for f in instruction.inline],
            "sources": list(instruction.sources),
        }
        if isinstance(instruction, Copy) and instruction.from_:
            found = self.plan.dockerfile.stage(instruction.from_)
            if found is not None and found.index in self.states:
                parts["from"] = self.states[found.index].key
            else:
                parts["from"] = self.image(instruction, instruction.from_).manifest_digest
            return parts
        if isinstance(instruction, Add) and _remote_sources(instruction):
            parts["remote"] = self.remote_key(instruction)
        with Tree(self.request.context) as context:
            selected = self.select(instruction, context, self.visible)
        # Thousands of entries: digested by the snapshot (which remembers it), not spelled
        # out in JSON.
        parts["files"] = sha256_digest(
            "".join(
                f"{source}\0{self.context.files_digest(source)}\n" for _, source in selected
            ).encode()
        )
        return parts

    def remote_key(self, instruction: Add) -> list[object]:
        """What an ADD's URLs and repositories hold: the ``--checksum`` when given (no
        request), else the content's digest and mtime after a conditional request; for git,
        the commit the ref names now."""
        keys: list[object] = []
        for source in _remote_sources(instruction):
            found = git_source(source)
            if found is not None:
                commit = self.git_commit(instruction, found)
                keys.append([source, commit, bool(instruction.keep_git_dir)])
            elif instruction.checksum:
                with self.reported(instruction):
                    check_checksum(instruction.checksum)
                keys.append([source, instruction.checksum, url_filename(source)])
            else:
                download = self.download(instruction, source)
                keys.append([source, download.digest, download.mtime, url_filename(source)])
        return keys

    @contextmanager
    def reported(self, instruction: Add) -> Iterator[None]:
        """A fetch's failure as a Dockerfile error naming the ADD's line."""
        try:
            yield
        except KilnError as err:
            raise self.error(instruction, str(err)) from None

    def download(self, instruction: Add, url: str) -> Download:
        found = self.downloads.get((url, instruction.checksum))
        if found is None:
            cache = HttpCache(self.store.root / "cache" / "http")
            with self.reported(instruction):
                found = cache.fetch(url, instruction.checksum)
            self.downloads[url, instruction.checksum] = found
        return found

    def git_commit(self, instruction: Add, source: GitSource) -> str:
        found = self.commits.get(source)
        if found is None:
            with self.reported(instruction):
                found = resolve_git(source, instruction.checksum)
            self.commits[source] = found
        return found

    def copy_remote(
        self,
        instruction: Add,
        source: str,
        image: Tree,
        dest: str,
        owner: tuple[int, int],
        mode: int | None,
    ) -> None:
        """A URL's file (mode 0600 unless ``--chmod``, never unpacked) or a repository's
        directory (its contents) into ``dest``, as BuildKit copies them. A repository's
        subdirectory is resolved inside the checkout: its symlinks lead nowhere else."""
        staging = self.work / f"remote-{uuid.uuid4().hex[:8]}"
        found = git_source(source)
        if found is not None:
            commit = self.git_commit(instruction, found)
            keep = bool(instruction.keep_git_dir)
            with self.reported(instruction):
                subdir = checkout_git(found, commit, staging, keep)
            with Tree(staging) as checkout:
                copy_into(checkout, subdir, image, dest, owner, mode, None)
            return
        download = self.download(instruction, source)
        staging.mkdir()
        name = url_filename(source)
        shutil.copyfile(download.path, staging / name)
        os.chmod(staging / name, 0o600)
        os.utime(staging / name, (download.mtime, download.mtime))
        with Tree(staging) as fetched:
            copy_into(fetched, name, image, dest, owner, mode, None)

    def run_step(self, state: _State, step: Step, rootfs: Path) -> None:
        instruction = step.instruction
        assert isinstance(instruction, Run)
        args = _run_args(instruction, state.config)
        env = [f"{k}={v}" for k, v in step.env] + [f"{k}={v}" for k, v in self.plan.proxy_env]
        volumes = [
            RuntimeMount(v.target, "bind", str(v.source), ("rbind", "ro" if v.readonly else "rw"))
            for v in self.request.volumes
        ]
        with ExitStack() as stack:
            mounts: list[RuntimeMount | None] = []
            agents = 0
            for mount in instruction.resolved_mounts:
                if mount.type == "ssh":
                    mounts.append(self.ssh_mount(instruction, mount, agents, env))
                    agents += 1
                else:
                    mounts.append(self.runtime_mount(instruction, mount, step.workdir, stack, env))
            self.run_process(state, step, rootfs, args, env, [*volumes, *(m for m in mounts if m)])

    def cache_mount(self, mount: Mount, target: str, stack: ExitStack) -> Path:
        """The directory a cache mount binds, kept across builds under the store. Sharing as
        BuildKit's: ``shared`` steps use it at once; ``locked`` ones wait their turn;
        ``private`` ones each get a directory no running step holds (the cache's own if
        it is free, else another copy of it, made empty)."""
        base = sha256_digest((mount.cache_id or target).encode())[7:39]
        caches = self.store.root / "cache-mounts"
        number = 0
        while True:
            directory = caches / (f"{base}-{number}" if number else base)
            number += 1
            if not directory.exists():
                directory.mkdir(parents=True, exist_ok=True)
                os.chmod(directory, mount.mode if mount.mode is not None else 0o755)
                os.chown(directory, mount.uid or 0, mount.gid or 0)
            if mount.sharing not in ("locked", "private"):
                return directory
            lock = stack.enter_context(open(directory.with_suffix(".lock"), "w"))  # noqa: SIM115
            if mount.sharing == "locked":
                fcntl.flock(lock, fcntl.LOCK_EX)
                return directory
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return directory
            except BlockingIOError:
                continue  # a running step holds this one: the next

    def redact(self, text: str) -> str:
        for value in self.secret_values:
            text = text.replace(value, "****")
        return text

    def ssh_mount(
        self, instruction: Run, mount: Mount, index: int, env: list[str]
    ) -> RuntimeMount | None:
        """``RUN --mount=type=ssh``: the agent socket ``--ssh ID=SOCKET`` forwards, bound at
        the target (``/run/buildkit/ssh_agent.N`` by default), with SSH_AUTH_SOCK pointing at
        the first one, as BuildKit does. Keys stay in the agent: nothing reaches a layer."""
        name = mount.cache_id or "default"
        socket = self.request.ssh.get(name)
        if socket is None:
            if mount.required:
                raise self.error(
                    instruction, f"no SSH agent was forwarded for id {name}",
                    f"pass --ssh {name}=SOCKET (or --ssh default for $SSH_AUTH_SOCK)",
                )  # fmt: skip
            return None
        target = mount.target or f"/run/buildkit/ssh_agent.{index}"
        if not any(e.startswith("SSH_AUTH_SOCK=") for e in env):
            env.append(f"SSH_AUTH_SOCK={target}")
        return RuntimeMount(target, "bind", str(socket), ("rbind", "rw"))

    def run_process(
        self,
        state: _State,
        step: Step,
        rootfs: Path,
        args: list[str],
        env: list[str],
        mounts: list[RuntimeMount],
    ) -> None:
        instruction = step.instruction
        assert isinstance(instruction, Run)
        with Tree(rootfs) as image:
            os.close(makedirs(image, step.workdir, (0, 0)))
        tail: list[str] = []
        number = self.current.number

        def output(line: bytes) -> None:
            text = self.redact(line.decode(errors="replace").rstrip("\n"))
            tail.append(text)
            del tail[:-_TAIL_LINES]
            self.builder.output(f"#{number} {text}")

        network = instruction.network if instruction.network != DEFAULT else self.request.network
        try:
            netns = str(self.network.namespace()) if network == DEFAULT else ""
        except KilnError as err:
            raise self.error(instruction, str(err)) from None
        spec = ProcessSpec(
            args, env, step.workdir, state.config.user, network, netns=netns,
            privileged=instruction.security == "insecure", mounts=tuple(mounts),
            extra_hosts=tuple(self.request.extra_hosts), shm_size=self.request.shm_size,
            limits=self.request.limits,
        )  # fmt: skip
        bundle = self.workspace.private() / f"bundle-{uuid.uuid4().hex[:8]}"
        command = f"RUN {' '.join(args[2:] if instruction.shell_form else args)!s}"
        try:
            status = run(rootfs, spec, bundle, output, self.request.isolation, self.live)
        except OutOfMemory as err:
            raise self.error(instruction, f"{command} was {err} (--memory)") from None
        if status != 0:
            last = " | ".join(tail[-3:])
            raise self.error(
                instruction,
                f"{command} failed with exit code {status}" + (f": {last}" if last else ""),
            )

    def runtime_mount(
        self, instruction: Run, mount: Mount, workdir: str, stack: ExitStack, env: list[str]
    ) -> RuntimeMount | None:
        """What a ``RUN --mount`` gives the process; None for a secret that is absent (and
        not required) or exposed as a variable only."""
        target = _mount_target(mount, workdir)
        if mount.type != "secret" and posixpath.normpath(target) == "/":
            raise self.error(instruction, f"RUN --mount: invalid mount target {mount.target!r}")
        if mount.type == "cache":
            directory = self.cache_mount(mount, mount.target, stack)
            return RuntimeMount(target, "bind", str(directory), ("rbind", "rw"))
        if mount.type == "tmpfs":
            size = (f"size={mount.size_limit}",) if mount.size_limit else ()
            return RuntimeMount(target, "tmpfs", "tmpfs", ("nosuid", "nodev", *size))
        if mount.type == "bind":
            throwaway = not mount.readonly  # writes to it are thrown away, as in BuildKit
            root = (
                stack.enter_context(self.stage_mount(instruction, mount.from_))
                if mount.from_ else self.request.context.absolute()
            )  # fmt: skip
            # The source as the stage or context has it: its symlinks followed inside it,
            # never to the host (runc's bind would follow them on the host).
            with Tree(root) as tree:
                try:
                    relative = tree.canonical(mount.source, follow=True)
                except TreeError as err:
                    raise self.error(instruction, f"RUN --mount: {err}") from None
            if relative is None:
                raise self.error(instruction, f"RUN --mount: {mount.source or '/'} not found")
            if not mount.from_ and self.visible is not None:  # .dockerignore hides some
                source = self.context_view(relative, copy=throwaway)
                throwaway = False  # the view is a copy already
                if not os.path.lexists(source):
                    raise self.error(instruction, f"RUN --mount: {mount.source or '/'} not found")
            else:
                source = root / relative if relative else root
            if throwaway:
                scratch = self.work / f"rw-{uuid.uuid4().hex[:8]}"
                subprocess.run(["cp", "-a", "--", str(source), str(scratch)], check=True)
                source = scratch
            return RuntimeMount(
                target, "bind", str(source), ("rbind", "ro" if mount.readonly else "rw")
            )
        if mount.type == "secret":
            name = mount.cache_id or os.path.basename(target)
            secret = self.request.secrets.get(name)
            if secret is None:
                if mount.required:
                    raise self.error(
                        instruction,
                        f"secret {name} is required but was not given",
                        "pass it with --secret id=" + name + ",src=FILE",
                    )
                return None
            value = secret if isinstance(secret, bytes) else secret.read_bytes()
            if mount.env:
                env.append(f"{mount.env}={value.decode(errors='replace').rstrip(chr(10))}")
                if not target:
                    return None
            copy = self.workspace.private() / f"secret-{uuid.uuid4().hex[:8]}"
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(value)
            os.chmod(copy, mount.mode if mount.mode is not None else 0o400)
            os.chown(copy, mount.uid or 0, mount.gid or 0)
            return RuntimeMount(
                target or f"/run/secrets/{name}", "bind", str(copy), ("rbind", "ro")
            )
        raise self.error(instruction, f"RUN --mount=type={mount.type} is not supported by kiln yet")

    def context_view(self, relative: str, *, copy: bool) -> Path:
        """What a bind mount of the context at ``relative`` shows when .dockerignore hides
        some of it: the files it lets through and nothing else, as BuildKit's context has
        them. Hard links where the mount is read-only (nothing can be changed through it);
        copies for a writable mount, whose writes are thrown away."""
        view = self.work / f"ctx-{uuid.uuid4().hex[:8]}"
        view.mkdir()
        context = self.request.context.absolute()
        shutil.copystat(context, view)
        for entry in self.context.under(relative):
            origin, target = context / entry.path, view / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.kind == "dir":
                target.mkdir(exist_ok=True)
                shutil.copystat(origin, target)
            elif entry.kind == "symlink":
                os.symlink(os.readlink(origin), target)
            elif entry.kind == "file" and copy:
                shutil.copy2(origin, target)
            elif entry.kind == "file":
                try:
                    os.link(origin, target)
                except OSError:  # on another filesystem
                    shutil.copy2(origin, target)
        return view / relative if relative else view

    def workdir_step(self, state: _State, step: Step, rootfs: Path) -> None:
        instruction = step.instruction
        assert isinstance(instruction, Workdir)
        path = join_workdir(step.workdir, instruction.path)
        with Tree(rootfs) as image:
            if image.is_dir(path):
                return
            try:
                user = resolve_user(image, state.config.user) if state.config.user else None
            except KilnError as err:
                raise self.error(instruction, str(err)) from None
            os.close(makedirs(image, path, (user.uid, user.gid) if user else (0, 0)))

    def copy_step(self, state: _State, step: Step, rootfs: Path) -> None:
        instruction = step.instruction
        assert isinstance(instruction, Copy | Add)
        with Tree(rootfs) as image, ExitStack() as stack:
            owner = self.owner(instruction, image)
            source = stack.enter_context(Tree(self.request.context))
            visible: set[str] | None = self.visible
            from_stage = isinstance(instruction, Copy) and bool(instruction.from_)
            if isinstance(instruction, Copy) and instruction.from_:
                source = stack.enter_context(
                    Tree(stack.enter_context(self.source_mount(instruction)))
                )
                visible = None
            try:
                self.copy_sources(instruction, step, source, image, owner, visible, from_stage)
            except TreeError as err:
                raise self.error(instruction, str(err)) from None

    def copy_sources(
        self,
        instruction: Copy | Add,
        step: Step,
        source: Tree,
        image: Tree,
        owner: tuple[int, int],
        visible: set[str] | None,
        from_stage: bool,
    ) -> None:
        mode = int(instruction.chmod, 8) if instruction.chmod else None
        dest = instruction.dest
        if not dest.startswith("/"):
            dest = join_workdir(step.workdir, dest) + ("/" if dest.endswith("/") else "")
        sources = self.select(instruction, source, visible)
        remote = _remote_sources(instruction) if isinstance(instruction, Add) else []
        many = len(sources) + len(instruction.inline) + len(remote) > 1 or any(
            set("*?[") & set(s) for s in instruction.sources if s not in remote
        )
        if many and not dest.endswith("/"):
            raise self.error(
                instruction,
                "When using COPY with more than one source file, the destination must be "
                "a directory and end with a /",
            )
        unpack = isinstance(instruction, Add) and instruction.unpack is not False
        # Only a lone source may be copied after the others (see run_on_overlay), and
        # only from the context: a stage's or image's mount is gone by then.
        deferrable = len(sources) == 1 and not instruction.inline and not from_stage and not remote
        deferred = getattr(self.current, "deferred", None) if deferrable else None
        exclude = PatternMatcher(list(instruction.excludes)) if instruction.excludes else None
        parents = isinstance(instruction, Copy) and instruction.parents
        for url in filter(is_url, remote):  # fetched (and checked) before any copy
            assert isinstance(instruction, Add)
            self.download(instruction, url)
        for named, relative in sources:
            if exclude is not None and exclude.matches(named):
                continue
            if unpack and self.unpack_archive(source, relative, image, dest, owner):
                continue
            target_dest = dest
            if parents:  # keep the source's path (below a /./ pivot, if there is one)
                kept = _below_pivot(named, instruction.sources)
                if not _real_dir(source, relative):
                    kept = os.path.dirname(kept)
                target_dest = "/".join(p for p in (dest.rstrip("/"), kept) if p) + "/"
            copy_into(source, relative, image, target_dest, owner, mode, visible, exclude,
                      deferred, os.path.basename(named))  # fmt: skip
        for url in remote:
            assert isinstance(instruction, Add)
            self.copy_remote(instruction, url, image, dest, owner, mode)
        for inline in instruction.inline:
            inline_target = dest + inline.name if dest.endswith("/") else dest
            write_file(image, inline_target, inline.content.encode(), owner,
                       mode if mode is not None else 0o644)  # fmt: skip

    def unpack_archive(
        self, source: Tree, relative: str, image: Tree, dest: str, owner: tuple[int, int]
    ) -> bool:
        """ADD of a local tar (compressed or not): unpacked into ``dest``, where its own
        symlinks are followed inside ``dest``, as Docker's chrooted untar follows them.
        BuildKit keeps an archive's own owners, ``--chown`` or not. False: not an archive."""
        entry = source.entry(relative)
        with opened(entry.parent):
            st = entry.lstat()
            if st is None or not stat.S_ISREG(st.st_mode):
                return False
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=entry.parent)  # fmt: skip
        with opened(fd):
            archive = Path(f"/proc/self/fd/{fd}")
            if not _is_tar(archive):
                return False
            with (
                opened(makedirs(image, dest.rstrip("/") or "/", owner)) as target,
                Tree.at(target) as into,
                open_decompressed(archive) as stream,
            ):
                unpack_layer(stream, into, whiteouts=False)
        return True

    def owner(self, instruction: Copy | Add, image: Tree) -> tuple[int, int]:
        if not instruction.chown:
            return (0, 0)
        try:
            if isinstance(instruction, Copy) and instruction.link:
                with Tree(self.accounts_view()) as accounts:  # names from the image below
                    user = resolve_user(accounts, instruction.chown)
            else:
                user = resolve_user(image, instruction.chown)
        except KilnError as err:
            raise self.error(instruction, str(err)) from None
        return user.uid, user.gid

    def accounts_view(self) -> Path:
        """A directory with the current image's /etc/passwd and /etc/group, for --link:
        each from the topmost layer that has it as a regular file, read without following
        a symlink (a layer's symlink means a path of the image, not of this machine)."""
        view = self.work / f"accounts-{uuid.uuid4().hex[:8]}"
        (view / "etc").mkdir(parents=True)
        state = self.current.state
        lowers = self.snapshots.lowers([layer.digest for layer in state.layers])
        for name in ("passwd", "group"):
            for lower in reversed(lowers):
                with Tree(lower) as snapshot:
                    found = snapshot.read(f"etc/{name}", links=False)
                if found is not None:
                    (view / "etc" / name).write_bytes(found)
                    break
        return view

    def source_mount(self, instruction: Copy) -> contextlib.AbstractContextManager[Path]:
        """The filesystem of the stage or image a ``COPY --from`` reads."""
        return self.stage_mount(instruction, instruction.from_)

    @contextmanager
    def stage_mount(self, instruction: Instruction, name: str) -> Iterator[Path]:
        """The filesystem of a stage or an image (``--from``), mounted for the block."""
        found = self.plan.dockerfile.stage(name)
        if found is not None and found.index in self.states:
            layers = self.states[found.index].layers
        else:
            layers = self.image(instruction, name).layers
        target = self.work / f"from-{uuid.uuid4().hex[:8]}"
        target.mkdir()
        lowers = self.snapshots.lowers([layer.digest for layer in layers])
        upper = self.work / f"from-upper-{uuid.uuid4().hex[:8]}"
        work = self.work / f"from-work-{uuid.uuid4().hex[:8]}"
        upper.mkdir()
        work.mkdir()
        with mounted(lowers, upper, work, target, kind=self.builder.kind):
            yield target

    def image(self, instruction: Instruction, name: str) -> StoredImage:
        """An image a step names (``--from``): from the store, else pulled (once)."""
        with self.pulling:
            try:
                return self.store.image(name)
            except KilnError:
                pass
            try:
                return self.builder.pull(name, self.current.state.platform, self.request)
            except KilnError as err:
                raise self.error(
                    instruction, f"--from: image {name!r} is not in kiln's store and cannot "
                    f"be pulled: {err}",
                ) from None  # fmt: skip

    def select(
        self, instruction: Copy | Add, root: Tree, visible: set[str] | None
    ) -> list[tuple[str, str]]:
        """The sources a COPY or ADD names, after .dockerignore: (the path as named, the
        path resolved inside ``root``). Symlinks on the way, and a symlink named as the
        source itself, are followed inside ``root``, as BuildKit follows them; one that
        leads out of it leads to nothing."""
        selected: list[tuple[str, str]] = []
        for source in instruction.sources:
            if isinstance(instruction, Add) and source in _remote_sources(instruction):
                continue  # fetched, not selected: see remote_key and copy_remote
            if is_url(source) or git_source(source) is not None:
                raise self.error(instruction, "source can't be a URL or a git repository for COPY")
            relative = os.path.normpath("/" + source).lstrip("/")
            if set("*?[") & set(relative):
                try:
                    matches = sorted(
                        (named, followed) for named, found in glob(root, relative)
                        if (followed := root.canonical(found, follow=True)) is not None
                        and (visible is None or (found in visible and followed in visible))
                    )  # fmt: skip
                except TreeError as err:
                    raise self.error(instruction, str(err)) from None
                if not matches:
                    raise self.error(instruction, f"no source files were specified by {source!r}")
                selected.extend(matches)
                continue
            try:
                resolved = root.canonical(relative, follow=True)
                named = root.canonical(relative)  # the symlink itself, if it is one
            except TreeError as err:
                raise self.error(instruction, str(err)) from None
            hidden = (
                visible is not None
                and bool(resolved)
                and (resolved not in visible or named not in visible)
            )
            if resolved is None or hidden:
                raise self.error(
                    instruction,
                    f'failed to compute cache key: "/{relative}": not found',
                    "check the path, and that .dockerignore does not exclude it",
                )
            selected.append((relative, resolved))
        return selected

    def error(self, instruction: Instruction, message: str, hint: str | None = None) -> BuildError:
        location = instruction.location
        return BuildError(
            message,
            line=location.start_line,
            end_line=location.end_line,
            file=self.dockerfile,
            hint=hint,
        )


# -- helpers -------------------------------------------------------------------------------------


ENTITLEMENTS = ("network.host", "security.insecure")


def _check_run_steps(plan: BuildPlan, request: BuildRequest, file: str) -> None:
    """Before anything runs: that RUN steps can be isolated here, and that no RUN asks for
    more than the user allowed (a Dockerfile is untrusted: ``RUN --network=host`` and
    ``--security=insecure`` need BuildKit's entitlements, given with ``--allow``)."""
    steps = [s.instruction for stage in plan.stages for s in stage.steps]
    runs = [step for step in steps if isinstance(step, Run)]
    if not runs:
        return
    unknown = set(request.allow) - set(ENTITLEMENTS)
    if unknown:
        raise KilnError(f"--allow {', '.join(sorted(unknown))}: kiln knows "
                        f"{' and '.join(ENTITLEMENTS)}")  # fmt: skip
    if request.network not in MODES:
        raise KilnError(f"--network {request.network}: expected {', '.join(MODES)}")
    check_isolation(request.isolation or "oci")
    for step in runs:
        wanted = [
            entitlement
            for entitlement, asked in (
                ("network.host", step.network == HOST and request.network != HOST),
                ("security.insecure", step.security == "insecure"),
            )
            if asked and entitlement not in request.allow
        ]
        if wanted:
            flag = "--network=host" if wanted[0] == "network.host" else "--security=insecure"
            raise BuildError(
                f"RUN {flag} is not allowed", line=step.location.start_line, file=file,
                hint=f"allow it with --allow {wanted[0]}",
            )  # fmt: skip


def _check_limits(request: BuildRequest) -> None:
    """Resource limits that make sense and can be enforced, refused before any step runs."""
    request.limits.check()
    if request.limits and request.isolation != "oci":
        raise KilnError(LIMITS_NEED_OCI)


def _checked_volumes(request: BuildRequest) -> tuple[Volume, ...]:
    """``request.volumes`` with absolute sources and normalised targets, refused before any
    step runs if a source is missing, a target is relative or "/", or RUN steps cannot take
    mounts (the chroot isolation)."""
    checked = []
    for volume in request.volumes:
        name = f"--volume {volume.source}:{volume.target}"
        if not volume.target.startswith("/"):
            raise KilnError(f"{name}: the container path must be absolute")
        target = "/" + os.path.normpath(volume.target).lstrip("/")
        if target == "/":
            raise KilnError(f"{name}: cannot mount over the root filesystem")
        if not os.path.exists(volume.source):
            raise KilnError(f"{name}: {volume.source} does not exist")
        checked.append(replace(volume, source=volume.source.absolute(), target=target))
    if checked and request.isolation != "oci":
        raise KilnError("--volume needs the oci isolation (runc)")
    return tuple(checked)


INLINE_CACHE = "kiln.cache.v1"  # the image config's field for its inline cache


def _inline_cache(entries: object, layers: int) -> list[tuple[str, int]]:
    """An image's inline cache, as (step key, index of its layer or -1); [] if it has none
    or it is malformed (it comes from the image, like everything else in it)."""
    if not isinstance(entries, list):
        return []
    checked = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2):
            return []
        key, index = entry
        if not (isinstance(key, str) and type(index) is int and -1 <= index < layers):
            return []
        checked.append((key, index))
    return checked


def _wants_inline_cache(request: BuildRequest) -> bool:
    """BUILDKIT_INLINE_CACHE=1 asks for it, as with BuildKit. An image whose layers are
    regrouped afterwards (--squash...) has no layer per step to point at, so none."""
    wanted = request.build_args.get("BUILDKIT_INLINE_CACHE", "").lower() in ("1", "true")
    return wanted and not request.layering.active


def _is_for(image: StoredImage, platform: Platform) -> bool:
    """Whether a stored image is for ``platform`` (its variant only when one is asked)."""
    config = image.config
    return (
        config.get("os", "linux") == platform.os
        and config.get("architecture") == platform.architecture
        and (not platform.variant or config.get("variant", "") == platform.variant)
    )


def _check_emulation(plan: BuildPlan, file: str) -> None:
    """A RUN step for a platform this machine cannot run fails before anything is built,
    saying how to get an emulator (a foreign build of COPY and metadata alone needs none)."""
    for stage in plan.stages:
        run = next((s.instruction for s in stage.steps if isinstance(s.instruction, Run)), None)
        if run is not None and not runs_here(stage.platform):
            raise BuildError(
                f"RUN for {stage.platform} needs an emulator, and none is registered here",
                line=run.location.start_line,
                file=file,
                hint=emulator_hint(stage.platform),
            )


def _secret_texts(secret: Path | bytes) -> set[str]:
    """A secret's value as a step could print it: whole, and without its final newline."""
    text = (secret if isinstance(secret, bytes) else secret.read_bytes()).decode(errors="replace")
    return {text, text.rstrip("\n")} - {""}


def _timestamp(seconds: float) -> str:
    if isinstance(seconds, int):
        return rfc3339(seconds)  # a SOURCE_DATE_EPOCH, written as BuildKit writes it
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entry(created_by: str, *, empty_layer: bool = False) -> dict[str, object]:
    """A history entry of this build; its date is set when the image is committed."""
    entry: dict[str, object] = {
        "created": None,
        "created_by": created_by,
        "comment": "buildkit.dockerfile.v0",
    }
    if empty_layer:
        entry["empty_layer"] = True
    return entry


def _run_args(instruction: Run, config: ImageConfig) -> list[str]:
    shell = list(config.shell or ("/bin/sh", "-c"))
    if not instruction.shell_form:
        return list(instruction.command)
    command = instruction.command[0] if instruction.command else ""
    docs = instruction.heredocs
    if (
        len(docs) == 1
        and command.strip().startswith("<<")
        and command.split() == [command.split()[0]]
    ):
        return [*shell, docs[0].content]  # the heredoc is the script
    for doc in docs:
        command += "\n" + doc.data + doc.name
    return [*shell, command]


def _remote_sources(instruction: Add) -> list[str]:
    """The sources of an ADD that are URLs or git repositories, not context paths."""
    return [s for s in instruction.sources if is_url(s) or git_source(s) is not None]


def _is_tar(path: Path) -> bool:
    """A tar archive, compressed or not (what ADD unpacks)."""
    try:
        with open_decompressed(path) as stream:
            header = stream.read(512)
    except (OSError, EOFError, ValueError):
        return False
    return len(header) == 512 and header[257:262] == b"ustar"


def _same_as_lower(lowers: list[Path]) -> Callable[[str, os.stat_result], bool]:
    """Whether a directory of the upper dir has the metadata of what the lower layers
    show at its path, read as overlayfs reads them: top layer first, a whiteout or a
    non-directory on the way hides the path, an opaque directory the layers below it."""

    def unchanged(relative: str, st: os.stat_result) -> bool:
        parts = relative.split("/")
        for lower in reversed(lowers):
            hides_below = False
            for depth in range(1, len(parts) + 1):
                path = lower.joinpath(*parts[:depth])
                try:
                    found = os.lstat(path)
                except OSError:
                    break  # not in this layer: look below, unless an opaque parent hides it
                if is_whiteout(path) or (depth < len(parts) and not stat.S_ISDIR(found.st_mode)):
                    return False
                if depth == len(parts):
                    return (
                        found.st_mode == st.st_mode
                        and (found.st_uid, found.st_gid) == (st.st_uid, st.st_gid)
                        and int(found.st_mtime) == int(st.st_mtime)
                    )
                hides_below = hides_below or is_opaque(path)
            if hides_below:
                return False
        return False

    return unchanged


def _below_pivot(relative: str, patterns: tuple[str, ...]) -> str:
    """``--parents`` keeps the path below a ``/./`` pivot of the pattern that selected it."""
    for pattern in patterns:
        head, pivot, _ = pattern.partition("/./")
        prefix = os.path.normpath("/" + head).lstrip("/")
        if pivot and (relative == prefix or relative.startswith(prefix + "/")):
            return relative[len(prefix) :].lstrip("/")
    return relative


def _holds_only(root: Path, path: str, *, upper: bool = False) -> bool:
    """Whether ``root`` holds nothing but the directories on the way to ``path`` (some of
    them, if not yet made); for an ``upper`` dir, nothing in ``path`` either, and none of
    them opaque (each would hide what a delta is mounted over)."""
    directory = root
    parts = path.split("/") if path else []
    for depth in range(len(parts) + 1):
        if not directory.is_dir() or directory.is_symlink():
            return not directory.exists()
        if upper and depth and is_opaque(directory):
            return False
        names = os.listdir(directory)
        if depth == len(parts):
            return not upper or not names
        if any(name != parts[depth] for name in names):
            return False
        directory = directory / parts[depth]
    return True


def _real_dir(tree: Tree, relative: str) -> bool:
    """Whether ``relative`` is a directory itself (not a symlink to one)."""
    entry = tree.entry(relative)
    with opened(entry.parent):
        st = entry.lstat()
    return st is not None and stat.S_ISDIR(st.st_mode)


def _mount_target(mount: Mount, workdir: str) -> str:
    """Where a ``RUN --mount`` lands: as in BuildKit, a relative target of a bind, cache or
    tmpfs mount is in the step's working directory; a secret's or an agent's stays as written."""
    if mount.type in ("secret", "ssh") or mount.target.startswith("/"):
        return mount.target
    return join_workdir(workdir, mount.target)


def _makes_layer(step: Step) -> bool:
    """The steps BuildKit shows as vertices of their own (the others change only config)."""
    return isinstance(step.instruction, Run | Copy | Add | Workdir)


class _StageCounter:
    """A stage's step headers as BuildKit writes them: ``[NAME I/N]``, where N counts FROM an
    image and the steps that make a layer, I is padded to N's width, and NAME (``stage-K``
    where unnamed) is left out of a Dockerfile with a single stage."""

    def __init__(self, stage: StagePlan, *, named: bool) -> None:
        self.from_image = stage.base_stage is None and stage.base.lower() != "scratch"
        self.total = int(self.from_image) + sum(_makes_layer(s) for s in stage.steps)
        self.name = (stage.name or f"stage-{stage.stage.index}") + " " if named else ""
        self.index = 0

    def header(self, text: str) -> str:
        self.index += 1
        return f"[{self.name}{self.index:>{len(str(self.total))}}/{self.total}] {text}"


@dataclass
class _Copied:
    """What a step's deferred copies did: per directory, what they wrote; the paths of the
    upper dir linked from the last run's snapshot (``previous``)."""

    manifests: dict[str, tuple[Owner, Manifest]] = field(default_factory=dict)
    kept: set[str] = field(default_factory=set)
    previous: LastCopy | None = None
    delta: str = ""  # the layer the upper dir is the changes from, if made as a delta
