"""Build semantics computed before anything runs.

``plan_build`` takes a parsed Dockerfile and the build's options (build args, target,
platform) and works out what BuildKit's frontend works out before it dispatches a step:
the global ARGs, each stage's base and platform, which stages depend on which, which are
reachable from the target, and for each reachable stage the steps it will run with every
build variable substituted and the environment each step sees.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from kiln.dockerfile.document import Dockerfile, Stage
from kiln.dockerfile.instructions import (
    Arg,
    Copy,
    Env,
    Instruction,
    Location,
    Onbuild,
    Run,
    Workdir,
    parse_instruction,
)
from kiln.dockerfile.mounts import MountError, parse_mount
from kiln.dockerfile.parser import parse
from kiln.dockerfile.shell import ShellError, ShellLex
from kiln.dockerfile.suggest import closest
from kiln.errors import DockerfileError
from kiln.platform import Platform, PlatformError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Build args every build accepts without an ARG: passed to RUN steps, kept out of the image.
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
PLATFORM_ARGS = (
    "BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT",
    "TARGETSTAGE",
)  # fmt: skip
# ARGs that configure the build itself and never become environment variables.
_NON_ENV_ARGS = frozenset(("BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"))


@dataclass(frozen=True)
class BaseImageConfig:
    """What a stage inherits from an external base image's config."""

    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    onbuild: tuple[str, ...] = ()


# The config of ``FROM scratch``: BuildKit's empty image works in "/".
SCRATCH = BaseImageConfig(working_dir="/")

# Looks up an image's config; None when it is not known (not pulled, no registry yet).
BaseImageResolver = Callable[[str, Platform], BaseImageConfig | None]


@dataclass(frozen=True)
class BuildOptions:
    """What a user chooses for one build: ``--build-arg``, ``--target``, ``--platform``."""

    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str = ""
    platform: Platform | None = None
    all_stages: bool = False  # plan unreachable stages too, as a linter does


@dataclass(frozen=True)
class PlanWarning:
    """Something suspicious that does not stop the build."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Step:
    """One instruction ready to run: variables substituted, and the scope it runs in.

    ``env`` is every variable the step sees (image env, ENV and ARG values), in order;
    ``onbuild`` marks a trigger inherited from the base.
    """

    instruction: Instruction
    env: tuple[tuple[str, str], ...]
    workdir: str
    onbuild: bool = False


@dataclass(frozen=True)
class StagePlan:
    """One stage as it will be built."""

    stage: Stage
    name: str
    base: str
    base_stage: int | None
    platform: Platform
    dependencies: tuple[int, ...]
    images: tuple[str, ...]
    steps: tuple[Step, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str


@dataclass(frozen=True)
class BuildPlan:
    """The whole build: reachable stages in the order they are built, the target last."""

    dockerfile: Dockerfile
    stages: tuple[StagePlan, ...]
    target: int
    global_args: tuple[tuple[str, str], ...]
    build_platform: Platform
    target_platform: Platform
    warnings: tuple[PlanWarning, ...]
    # Proxy build args (http_proxy...): given to RUN steps, kept out of the image and cache key.
    proxy_env: tuple[tuple[str, str], ...] = ()

    @property
    def target_stage(self) -> StagePlan:
        return next(s for s in self.stages if s.stage.index == self.target)

    def stage(self, name_or_index: str) -> StagePlan | None:
        found = self.dockerfile.stage(name_or_index)
        return next((s for s in self.stages if found and s.stage is found), None)


def plan_build(
    dockerfile: Dockerfile,
    options: BuildOptions | None = None,
    resolve_base: BaseImageResolver | None = None,
) -> BuildPlan:
    """Work out the build; a ``DockerfileError`` names the line that makes it impossible."""
    return _Planner(dockerfile, options or BuildOptions(), resolve_base).run()


# -- the planner -----------------------------------------------------------------------------


@dataclass
class _Scope:
    """The variables and working directory a stage has reached."""

    env: dict[str, str]  # what steps see: image env plus ARG values
    image_env: dict[str, str]  # what the image's config will carry
    workdir: str
    declared: set[str] = field(default_factory=set)  # this stage's ARG names
    env_known: bool = True  # False when the base image's env could not be looked up

    def copy(self) -> _Scope:
        return _Scope(
            dict(self.env), dict(self.image_env), self.workdir, set(self.declared), self.env_known
        )


@dataclass
class _Expander:
    """Expands words in one scope and remembers which variables were not set."""

    lex: ShellLex
    env: Mapping[str, str]
    unmatched: set[str] = field(default_factory=set)

    def _expand(self, lex: ShellLex, text: str) -> tuple[str, list[str]]:
        expansion = lex.expand(text, self.env)
        self.unmatched |= expansion.unmatched
        return expansion.result, expansion.words

    def word(self, text: str) -> str:
        return self._expand(self.lex, text)[0]

    def words(self, text: str) -> list[str]:
        return self._expand(self.lex, text)[1]

    def heredoc(self, text: str) -> str:
        return self._expand(ShellLex("\\", skip_process_quotes=True), text)[0]


@dataclass(frozen=True)
class _Source:
    """An instruction that reads another stage: ``COPY --from`` or ``RUN --mount from=``."""

    instruction: Instruction
    stage: int
    reference: str  # as written
    mount_target: str | None = None


@dataclass(frozen=True)
class _Outline:
    """A stage's place in the graph, known before any step is evaluated."""

    base: str
    base_stage: int | None
    platform: Platform
    sources: tuple[_Source, ...]
    images: tuple[str, ...]


class _Planner:
    def __init__(
        self,
        dockerfile: Dockerfile,
        options: BuildOptions,
        resolve_base: BaseImageResolver | None,
    ) -> None:
        self.df = dockerfile
        self.options = options
        self.resolve_base = resolve_base
        self.lex = ShellLex(dockerfile.escape)
        self.warnings: list[PlanWarning] = []
        self.build_platform = Platform.host()
        self.target_platform = options.platform or self.build_platform
        self.consumed: set[str] = set()

    # -- errors and warnings

    def error(self, location: Location | None, message: str, hint: str | None = None) -> NoReturn:
        raise DockerfileError(
            message,
            line=location.start_line if location else None,
            end_line=location.end_line if location else None,
            file=self.df.file,
            hint=hint,
        )

    def warn(self, location: Location | None, message: str) -> None:
        warning = PlanWarning(self.df.file, location.start_line if location else None, message)
        if warning not in self.warnings:
            self.warnings.append(warning)

    # -- the steps of planning

    def run(self) -> BuildPlan:
        self.check_stage_names()
        target_name = self.options.target or self.df.stages[-1].name
        global_args = self.global_args(target_name)
        outlines = [self.outline(stage, global_args) for stage in self.df.stages]
        target = self.find_target()
        self.check_cycles(outlines)
        wanted = (
            set(range(len(outlines)))
            if self.options.all_stages
            else self.reachable(outlines, target)
        )
        planned: dict[int, StagePlan] = {}
        scopes: dict[int, _Scope] = {}
        for stage in self.df.stages:
            if stage.index in wanted:
                plan, scopes[stage.index] = self.plan_stage(
                    stage, outlines, planned, scopes, global_args
                )
                planned[stage.index] = plan
        self.report_unused_build_args()
        return BuildPlan(
            dockerfile=self.df,
            stages=tuple(planned[i] for i in sorted(planned)),
            target=target,
            global_args=tuple(global_args.items()),
            build_platform=self.build_platform,
            target_platform=self.target_platform,
            warnings=tuple(self.warnings),
            proxy_env=tuple((k, v) for k, v in self.options.build_args.items() if k in PROXY_ARGS),
        )

    def check_stage_names(self) -> None:
        first: dict[str, int] = {}
        for stage in self.df.stages:
            name, location = stage.name, stage.from_.location
            if name in ("scratch", "context"):
                self.warn(location, f"'{name}' is reserved and should not be used as a stage name")
            if name and name in first:
                self.warn(
                    location,
                    f'duplicate stage name "{name}" (first on line {first[name]}), '
                    "stage names should be unique",
                )
            first.setdefault(name, location.start_line)

    def global_args(self, target_name: str) -> dict[str, str]:
        """Predefined platform args, then the ARGs before the first FROM, in order."""
        build, target = self.build_platform, self.target_platform
        values = dict(
            zip(
                PLATFORM_ARGS,
                (str(build), build.os, "", build.architecture, build.variant,
                 str(target), target.os, "", target.architecture, target.variant,
                 target_name),
                strict=True,
            )
        )  # fmt: skip
        build_args = self.options.build_args
        values.update((k, build_args[k]) for k in PLATFORM_ARGS if k in build_args)
        for arg in self.df.meta_args:
            for definition in arg.args:
                self.consumed.add(definition.key)
                if definition.key in build_args:
                    values[definition.key] = build_args[definition.key]
                elif definition.default is not None:
                    values[definition.key] = self.expand(arg, definition.default, values)[0]
        return values

    def expand(
        self, instruction: Instruction, word: str, env: Mapping[str, str]
    ) -> tuple[str, set[str]]:
        try:
            expansion = self.lex.expand(word, env)
        except ShellError as err:
            self.error(instruction.location, str(err))
        return expansion.result, expansion.unmatched

    def outline(self, stage: Stage, global_args: dict[str, str]) -> _Outline:
        from_ = stage.from_
        base, unmatched = self.expand(from_, from_.base, global_args)
        declared = {d.key for arg in self.df.meta_args for d in arg.args}
        for name in sorted(unmatched - declared):
            self.warn(from_.location, f"FROM argument {name!r} is not declared")
        if not base:
            self.error(from_.location, f"base name ({from_.base}) should not be blank")
        platform = self.target_platform
        if from_.platform:
            text, unmatched = self.expand(from_, from_.platform, global_args)
            if not text:
                hint = _did_you_mean(unmatched, global_args)
                self.error(
                    from_.location, f"empty platform value from expression {from_.platform}", hint
                )
            try:
                platform = Platform.parse(text)
            except PlatformError as err:
                self.error(from_.location, str(err))
        base_stage = None
        for earlier in self.df.stages[: stage.index]:
            if earlier.name and earlier.name == base:
                base_stage = earlier.index
        sources: list[_Source] = []
        images: list[str] = []
        for instruction in self.instructions_with_triggers(stage, base_stage):
            for reference, mount_target in _stage_references(instruction):
                index = self.stage_index(instruction, reference, mount_target is None)
                if index is None:
                    images.append(reference)
                else:
                    sources.append(_Source(instruction, index, reference, mount_target))
        return _Outline(base, base_stage, platform, tuple(sources), tuple(images))

    def instructions_with_triggers(self, stage: Stage, base_stage: int | None) -> list[Instruction]:
        triggers = [] if base_stage is None else self.stage_triggers(stage, base_stage)
        return [*triggers, *stage.instructions]

    def stage_triggers(self, stage: Stage, base_stage: int) -> list[Instruction]:
        """The ONBUILD triggers a stage inherits from the stage it is built on."""
        parent = self.df.stages[base_stage]
        triggers: list[Instruction] = []
        for onbuild in parent.instructions:
            if not isinstance(onbuild, Onbuild):
                continue
            if onbuild.trigger is None:
                self.error(
                    stage.from_.location,
                    f'ONBUILD trigger "{onbuild.expression}" of stage "{parent.display_name}" '
                    f"(line {onbuild.location.start_line}): {onbuild.trigger_problem}",
                )
            triggers.append(onbuild.trigger)
        return triggers

    def stage_index(self, instruction: Instruction, reference: str, by_index: bool) -> int | None:
        """The stage a ``--from`` names, or None when it names an image."""
        if by_index and reference.isdecimal():
            index = int(reference)
            if index >= len(self.df.stages):
                self.error(instruction.location, f"invalid stage index {index}")
            return index
        found = self.df.stage(reference) if not reference.isdecimal() else None
        return found.index if found else None

    def find_target(self) -> int:
        if not self.options.target:
            return len(self.df.stages) - 1
        found = self.df.stage(self.options.target)
        if found is None or self.options.target.isdecimal():
            names = [s.name for s in self.df.stages if s.name]
            suggestion = closest(self.options.target, names)
            self.error(
                None,
                f"target stage {self.options.target!r} could not be found".replace("'", '"'),
                f"did you mean {suggestion}?" if suggestion else None,
            )
        return found.index

    def dependencies(self, outline: _Outline) -> list[int]:
        deps = [] if outline.base_stage is None else [outline.base_stage]
        return deps + [s.stage for s in outline.sources if s.stage not in deps]

    def check_cycles(self, outlines: list[_Outline]) -> None:
        state: dict[int, str] = {}

        def visit(index: int) -> None:
            state[index] = "visiting"
            for dep in self.dependencies(outlines[index]):
                if state.get(dep) == "visiting":
                    self.error(
                        self.df.stages[index].from_.location,
                        "circular dependency detected on stage: "
                        + self.df.stages[dep].display_name,
                    )
                if dep not in state:
                    visit(dep)
            state[index] = "done"

        for index in range(len(outlines)):
            if index not in state:
                visit(index)

    def reachable(self, outlines: list[_Outline], target: int) -> set[int]:
        seen: set[int] = set()
        pending = [target]
        while pending:
            index = pending.pop()
            if index not in seen:
                seen.add(index)
                pending.extend(self.dependencies(outlines[index]))
        return seen

    # -- evaluating one stage

    def plan_stage(
        self,
        stage: Stage,
        outlines: list[_Outline],
        planned: dict[int, StagePlan],
        scopes: dict[int, _Scope],
        global_args: dict[str, str],
    ) -> tuple[StagePlan, _Scope]:
        outline = outlines[stage.index]
        name = stage.name if len(self.df.stages) > 1 else ""
        display = name or (f"stage-{stage.index}" if len(self.df.stages) > 1 else "")
        for source in outline.sources:
            if source.stage in planned:
                continue
            if source.mount_target is None:
                self.error(
                    source.instruction.location,
                    f'cannot copy from stage "{source.reference}", it needs to be defined '
                    f'before current stage "{display or stage.display_name}"',
                )
            self.error(
                source.instruction.location,
                f'cannot mount from stage "{source.reference}" to "{source.mount_target}", '
                "stage needs to be defined before current command",
            )
        if outline.base_stage is not None:
            scope = scopes[outline.base_stage].copy()
            triggers = self.stage_triggers(stage, outline.base_stage)
        else:
            scope, triggers = self.base_scope(stage, outline)
        steps: list[Step] = []
        for instruction in triggers:
            steps.append(self.step(instruction, scope, global_args, onbuild=True))
        for instruction in stage.instructions:
            steps.append(self.step(instruction, scope, global_args))
        deps = self.dependencies(outline)
        return (
            StagePlan(
                stage=stage,
                name=name,
                base=outline.base,
                base_stage=outline.base_stage,
                platform=outline.platform,
                dependencies=tuple(deps),
                images=outline.images,
                steps=tuple(steps),
                env=tuple(scope.image_env.items()),
                workdir=scope.workdir,
            ),
            scope,
        )

    def base_scope(self, stage: Stage, outline: _Outline) -> tuple[_Scope, list[Instruction]]:
        """The scope an external base image (or scratch) starts a stage with."""
        config: BaseImageConfig | None = SCRATCH
        if outline.base.lower() != "scratch":
            config = (
                self.resolve_base(outline.base, outline.platform) if self.resolve_base else None
            )
        known = config is not None
        config = config or BaseImageConfig()
        image_env = dict(_split_env(config.env))
        image_env.setdefault("PATH", DEFAULT_PATH)
        workdir = join_workdir("/", config.working_dir) if config.working_dir else "/"
        triggers = [
            _trigger_from_image(expression, stage.from_.location, self.df)
            for expression in config.onbuild
        ]
        return _Scope(dict(image_env), image_env, workdir, env_known=known), triggers

    def step(
        self,
        instruction: Instruction,
        scope: _Scope,
        global_args: dict[str, str],
        *,
        onbuild: bool = False,
    ) -> Step:
        env_before = tuple(scope.env.items())
        workdir_before = scope.workdir
        if isinstance(instruction, Arg):
            self.dispatch_arg(instruction, scope, global_args)
            expanded: Instruction = instruction
        elif isinstance(instruction, Onbuild):
            expanded = instruction
        else:
            expander = _Expander(self.lex, scope.env)
            try:
                expanded = instruction.expanded(expander)
            except ShellError as err:
                self.error(instruction.location, str(err))
            except MountError as err:
                self.error(instruction.location, str(err), err.hint)
            except DockerfileError as err:
                raise err.in_file(self.df.file) from None
            self.report_undefined(instruction, expander.unmatched, scope)
            if isinstance(expanded, Env):
                for pair in expanded.pairs:
                    scope.env[pair.key] = pair.value
                    scope.image_env[pair.key] = pair.value
            elif isinstance(expanded, Workdir):
                scope.workdir = join_workdir(scope.workdir, expanded.path)
        return Step(expanded, env_before, workdir_before, onbuild)

    def dispatch_arg(self, arg: Arg, scope: _Scope, global_args: dict[str, str]) -> None:
        """BuildKit's ARG: a build arg wins, then the default, then the global value."""
        build_args = self.options.build_args
        for definition in arg.args:
            key = definition.key
            self.consumed.add(key)
            value: str | None
            if key in build_args:
                value = build_args[key]
            elif definition.default is not None:
                expander = _Expander(self.lex, scope.env)
                try:
                    value = expander.word(definition.default)
                except ShellError as err:
                    self.error(arg.location, str(err))
                self.report_undefined(arg, expander.unmatched, scope)
            else:
                value = global_args.get(key)
            if value is not None and key not in _NON_ENV_ARGS:
                scope.env[key] = value
            scope.declared.add(key)

    def report_undefined(self, instruction: Instruction, names: set[str], scope: _Scope) -> None:
        for name in sorted(names - scope.declared - _NON_ENV_ARGS):
            message = f"usage of undefined variable '${name}'"
            suggestion = closest(name, scope.env, case_sensitive=True)
            if suggestion:
                message += f" (did you mean ${suggestion}?)"
            elif not scope.env_known:
                message += " (unless the base image defines it)"
            self.warn(instruction.location, message)

    def report_unused_build_args(self) -> None:
        # SOURCE_DATE_EPOCH is consumed by the build itself (the image's timestamps).
        ignored = (
            self.consumed
            | PROXY_ARGS
            | set(PLATFORM_ARGS)
            | {"SOURCE_DATE_EPOCH", "BUILDKIT_INLINE_CACHE"}
        )
        for name in sorted(set(self.options.build_args) - ignored):
            self.warn(None, f"build-arg {name!r} was not consumed by any ARG")


# -- helpers ---------------------------------------------------------------------------------


def _stage_references(instruction: Instruction) -> Iterable[tuple[str, str | None]]:
    """Stages or images an instruction reads: (reference, mount target or None for COPY)."""
    if isinstance(instruction, Copy) and instruction.from_:
        yield instruction.from_, None
    if isinstance(instruction, Run):
        for spec in instruction.mounts:
            try:
                mount = parse_mount(spec, lambda word: word)
            except MountError:
                continue  # reported when the step is expanded, with its variables
            if mount.from_ and mount.type != "secret":
                yield mount.from_, mount.target


def _trigger_from_image(expression: str, location: Location, df: Dockerfile) -> Instruction:
    """An ONBUILD trigger stored in a base image, parsed as if written at the FROM line."""
    try:
        nodes = parse(expression, file=df.file).nodes
        node = nodes[0]
        node.start_line, node.end_line = location.start_line, location.end_line
        return parse_instruction(node)
    except DockerfileError as err:
        err.message = f"base image ONBUILD trigger: {err.message}"
        err.line, err.end_line = location.start_line, location.end_line
        raise err.in_file(df.file) from None


def _split_env(entries: Iterable[str]) -> Iterable[tuple[str, str]]:
    for entry in entries:
        key, _, value = entry.partition("=")
        yield key, value


def join_workdir(current: str, path: str) -> str:
    """WORKDIR semantics as BuildKit's NormalizeWorkdir: an absolute path is kept as written
    (``/app/`` stays ``/app/`` in the config), a relative one joins the current directory
    and comes out clean."""
    if path.startswith("/"):
        return path
    joined = posixpath.normpath(posixpath.join("/", current, path))
    return "/" + joined.lstrip("/")


def _did_you_mean(unmatched: set[str], env: Mapping[str, str]) -> str | None:
    for name in sorted(unmatched):
        suggestion = closest(name, env, case_sensitive=True)
        if suggestion:
            return f"did you mean ${suggestion}?"
    return None
