"""Typed instructions: what each Dockerfile line means, before variables are expanded.

``parse_instruction`` turns one syntax-tree node into a frozen dataclass that keeps where it
came from. Values stay as written; ``expanded(expander)`` returns the copy with build
variables substituted, for exactly the fields BuildKit substitutes (ENV and LABEL keys and
values, ADD/COPY sources, destination and ownership, WORKDIR, USER, VOLUME, EXPOSE,
STOPSIGNAL, mount options). RUN, CMD, ENTRYPOINT, HEALTHCHECK and SHELL are left to the
shell at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Self, TypeVar

from kiln.dockerfile.flags import FlagError, FlagKind, Flags
from kiln.dockerfile.heredoc import Heredoc, chomp, parse_heredoc
from kiln.dockerfile.mounts import Mount, MountError, check_mount_syntax, parse_mount
from kiln.dockerfile.parser import Node
from kiln.dockerfile.suggest import closest
from kiln.dockerfile.units import parse_duration
from kiln.errors import DockerfileError

INSTRUCTIONS = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
)  # fmt: skip
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*\Z")
_ONBUILD_PREFIX = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE)


STRING, STRINGS, BOOL = FlagKind.STRING, FlagKind.STRINGS, FlagKind.BOOL


class Expander(Protocol):
    """Substitutes build variables the way one build step sees them."""

    def word(self, text: str) -> str:
        """One word, quotes removed, variables substituted."""

    def words(self, text: str) -> list[str]:
        """A list argument: substituted, then split into fields."""

    def heredoc(self, text: str) -> str:
        """A heredoc body: variables substituted, quotes left alone."""


@dataclass(frozen=True)
class Location:
    """The lines (1-based, inclusive) an instruction spans, heredoc bodies included."""

    start_line: int
    end_line: int


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """What every instruction has: its keyword as written, its source text and lines."""

    keyword: str
    source: str
    location: Location

    @property
    def name(self) -> str:
        """The upper-case instruction name: ``RUN``, ``COPY``..."""
        return self.keyword.upper()

    def expanded(self, expander: Expander) -> Self:
        """This instruction with build variables substituted (most have none)."""
        return self


@dataclass(frozen=True)
class KeyValue:
    """``key=value``; ``legacy`` when written as ``ENV key value``."""

    key: str
    value: str
    legacy: bool = False

    def expanded(self, expander: Expander) -> KeyValue:
        return KeyValue(expander.word(self.key), expander.word(self.value), self.legacy)


@dataclass(frozen=True)
class InlineFile:
    """A heredoc body: a RUN script or a COPY/ADD source, as written in the Dockerfile."""

    name: str
    data: str
    chomp: bool = False
    expand: bool = True

    @property
    def content(self) -> str:
        """The body with ``<<-`` tab stripping applied."""
        return chomp(self.data) if self.chomp else self.data


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    pairs: tuple[KeyValue, ...]

    def expanded(self, expander: Expander) -> Self:
        return replace(self, pairs=tuple(p.expanded(expander) for p in self.pairs))


@dataclass(frozen=True, kw_only=True)
class Label(Instruction):
    pairs: tuple[KeyValue, ...]

    def expanded(self, expander: Expander) -> Self:
        return replace(self, pairs=tuple(p.expanded(expander) for p in self.pairs))


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    maintainer: str


@dataclass(frozen=True, kw_only=True)
class _Transfer(Instruction):
    """What ADD and COPY share: sources (paths and heredocs), destination, ownership."""

    sources: tuple[str, ...]
    inline: tuple[InlineFile, ...]
    dest: str
    chown: str = ""
    chmod: str = ""
    link: bool = False
    excludes: tuple[str, ...] = ()

    def _expanded_transfer(self, expander: Expander) -> dict[str, Any]:
        return {
            "sources": tuple(expander.word(s) for s in self.sources),
            "dest": expander.word(self.dest),
            "chown": expander.word(self.chown),
            "chmod": expander.word(self.chmod),
            "inline": tuple(
                replace(f, data=expander.heredoc(f.content), chomp=False) if f.expand else f
                for f in self.inline
            ),
        }


@dataclass(frozen=True, kw_only=True)
class Copy(_Transfer):
    """COPY; ``from_`` names a stage, a stage index or an image (never expanded)."""

    from_: str = ""
    parents: bool = False

    def expanded(self, expander: Expander) -> Self:
        return replace(self, **self._expanded_transfer(expander))


@dataclass(frozen=True, kw_only=True)
class Add(_Transfer):
    """ADD; ``keep_git_dir`` and ``unpack`` are None when the flag was not written."""

    checksum: str = ""
    keep_git_dir: bool | None = None
    unpack: bool | None = None

    def expanded(self, expander: Expander) -> Self:
        fields = self._expanded_transfer(expander)
        return replace(self, checksum=expander.word(self.checksum), **fields)


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    """FROM: the base (an image, ``scratch`` or an earlier stage) and the stage's name."""

    base: str
    stage_name: str = ""
    platform: str = ""
    comment: str = ""


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    """ONBUILD: a trigger stored in the image, run by builds that use it as a base.

    ``trigger`` is the parsed instruction. A trigger that does not parse is not an error of
    this Dockerfile (BuildKit stores it as text): ``trigger`` is None and ``trigger_problem``
    says why; a build that uses this stage as its base fails on it.
    """

    expression: str
    trigger: Instruction | None
    trigger_problem: str = ""


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    path: str

    def expanded(self, expander: Expander) -> Self:
        return replace(self, path=expander.word(self.path))


@dataclass(frozen=True, kw_only=True)
class _CommandLine(Instruction):
    """An exec-form list, or (``shell_form``) one string for the image's SHELL."""

    command: tuple[str, ...]
    shell_form: bool


@dataclass(frozen=True, kw_only=True)
class Run(_CommandLine):
    """RUN. ``mounts`` are as written; ``resolved_mounts`` is filled by ``expanded``."""

    heredocs: tuple[InlineFile, ...] = ()
    mounts: tuple[str, ...] = ()
    network: str = "default"
    security: str = "sandbox"
    resolved_mounts: tuple[Mount, ...] = ()

    def expanded(self, expander: Expander) -> Self:
        try:
            resolved = tuple(parse_mount(spec, expander.word) for spec in self.mounts)
        except MountError as err:
            raise _error(self.location, str(err), err.hint) from None
        return replace(self, resolved_mounts=resolved)


@dataclass(frozen=True, kw_only=True)
class Cmd(_CommandLine):
    pass


@dataclass(frozen=True, kw_only=True)
class Entrypoint(_CommandLine):
    pass


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    """HEALTHCHECK; ``test`` is ``("NONE",)``, ``("CMD", ...)`` or ``("CMD-SHELL", cmd)``.

    Durations are nanoseconds, 0 meaning "the engine's default".
    """

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    ports: tuple[str, ...]

    def expanded(self, expander: Expander) -> Self:
        return replace(self, ports=tuple(p for text in self.ports for p in expander.words(text)))


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    user: str

    def expanded(self, expander: Expander) -> Self:
        return replace(self, user=expander.word(self.user))


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    volumes: tuple[str, ...]

    def expanded(self, expander: Expander) -> Self:
        return replace(self, volumes=tuple(expander.word(v) for v in self.volumes))


@dataclass(frozen=True, kw_only=True)
class StopSignal(Instruction):
    signal: str

    def expanded(self, expander: Expander) -> Self:
        return replace(self, signal=expander.word(self.signal))


@dataclass(frozen=True)
class ArgDefinition:
    """One name of an ARG, with its default (None when it has none)."""

    key: str
    default: str | None = None
    comment: str = ""


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    """ARG; defaults are expanded by the build scope, which knows the build args."""

    args: tuple[ArgDefinition, ...]


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    shell: tuple[str, ...]


# -- from nodes to instructions ---------------------------------------------------------------

_I = TypeVar("_I", bound=Instruction)


def _error(location: Location, message: str, hint: str | None = None) -> DockerfileError:
    return DockerfileError(message, line=location.start_line, end_line=location.end_line, hint=hint)


@dataclass
class _Request:
    """One node on its way to becoming an instruction."""

    node: Node
    flags: Flags = field(init=False)

    def __post_init__(self) -> None:
        self.flags = Flags(list(self.node.flags))

    @property
    def args(self) -> list[str]:
        return self.node.args

    @property
    def location(self) -> Location:
        return Location(self.node.start_line, self.node.end_line)

    def make(self, cls: type[_I], **fields: Any) -> _I:
        """An instruction of type ``cls`` from this node, with the given fields."""
        return cls(
            keyword=self.node.keyword,
            source=self.node.original.strip(),
            location=self.location,
            **fields,
        )

    def error(self, message: str, hint: str | None = None) -> DockerfileError:
        return _error(self.location, message, hint)

    def parse_flags(self, kinds: dict[str, FlagKind] | None = None) -> Flags:
        for name, kind in (kinds or {}).items():
            self.flags.declare(name, kind)
        try:
            self.flags.parse()
        except FlagError as err:
            raise self.error(f"{self.node.name.upper()}: {err}", err.hint) from None
        return self.flags

    def command_line(self) -> tuple[str, ...]:
        if not self.args:
            return ()
        return tuple(self.args) if self.node.json else (" ".join(self.args),)


def parse_instruction(node: Node) -> Instruction:
    """The typed instruction for one node; a ``DockerfileError`` names its line."""
    request = _Request(node)
    parser = _PARSERS.get(node.name)
    if parser is None:
        suggestion = closest(node.keyword, INSTRUCTIONS)
        raise request.error(
            f"unknown instruction {node.keyword.upper()!r}".replace("'", '"'),
            f"did you mean {suggestion}?" if suggestion else None,
        )
    return parser(request)


def _key_values(request: _Request, keyword: str) -> tuple[KeyValue, ...]:
    request.parse_flags()
    args = request.args
    if not args:
        raise request.error(f"{keyword} requires at least one argument")
    pairs = []
    for i in range(0, len(args) - len(args) % 3, 3):
        key, value, delimiter = args[i : i + 3]
        if not key:
            raise request.error(f"{keyword} names can not be blank")
        pairs.append(KeyValue(key, value, legacy=delimiter == ""))
    return tuple(pairs)


def _parse_env(r: _Request) -> Env:
    return r.make(Env, pairs=_key_values(r, "ENV"))


def _parse_label(r: _Request) -> Label:
    return r.make(Label, pairs=_key_values(r, "LABEL"))


def _parse_maintainer(r: _Request) -> Maintainer:
    if len(r.args) != 1:
        raise r.error("MAINTAINER requires exactly one argument")
    r.parse_flags()
    return r.make(Maintainer, maintainer=r.args[0])


def _transfer_parts(r: _Request, keyword: str) -> dict[str, Any]:
    """Sources, heredoc sources and destination of ADD/COPY."""
    if len(r.args) < 2:
        raise r.error(
            f"{keyword} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )
    *sources, dest = r.args
    if parse_heredoc(dest) is not None:
        raise r.error(f"{keyword} cannot accept a heredoc as a destination")
    bodies = {doc.name: doc for doc in r.node.heredocs}
    paths: list[str] = []
    inline: list[InlineFile] = []
    for source in sources:
        doc = parse_heredoc(source)
        if doc is None:
            paths.append(source)
        else:
            body = bodies.get(doc.name, Heredoc(doc.name))
            inline.append(InlineFile(doc.name, body.content, doc.chomp, doc.expand))
    return {"sources": tuple(paths), "inline": tuple(inline), "dest": dest}


def _parse_add(r: _Request) -> Add:
    if len(r.args) < 2:
        _transfer_parts(r, "ADD")
    f = r.parse_flags(
        {"chown": STRING, "chmod": STRING, "link": BOOL, "keep-git-dir": BOOL,
         "checksum": STRING, "unpack": BOOL, "exclude": STRINGS}
    )  # fmt: skip
    return r.make(
        Add,
        **_transfer_parts(r, "ADD"),
        chown=f.string("chown"),
        chmod=f.string("chmod"),
        link=f.boolean("link"),
        keep_git_dir=f.optional_boolean("keep-git-dir"),
        checksum=f.string("checksum"),
        unpack=f.optional_boolean("unpack"),
        excludes=f.strings("exclude"),
    )


def _parse_copy(r: _Request) -> Copy:
    if len(r.args) < 2:
        _transfer_parts(r, "COPY")
    f = r.parse_flags(
        {"chown": STRING, "from": STRING, "chmod": STRING, "link": BOOL,
         "exclude": STRINGS, "parents": BOOL}
    )  # fmt: skip
    return r.make(
        Copy,
        **_transfer_parts(r, "COPY"),
        from_=f.string("from"),
        chown=f.string("chown"),
        chmod=f.string("chmod"),
        link=f.boolean("link"),
        parents=f.boolean("parents"),
        excludes=f.strings("exclude"),
    )


def _parse_from(r: _Request) -> From:
    args = r.args
    stage_name = ""
    if len(args) == 3 and args[1].lower() == "as":
        stage_name = args[2].lower()
        if not _STAGE_NAME.match(stage_name):
            raise r.error(
                f"invalid name for build stage: {args[2]!r}, "
                "name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise r.error("FROM requires either one or three arguments")
    f = r.parse_flags({"platform": STRING})
    comment = ""
    for line in r.node.comments:
        if stage_name and line.startswith(stage_name + " "):
            comment = line[len(stage_name) + 1 :]
            break
    return r.make(
        From,
        base=args[0],
        stage_name=stage_name,
        platform=f.string("platform"),
        comment=comment,
    )


def _parse_onbuild(r: _Request) -> Onbuild:
    trigger_node = r.node.trigger
    if trigger_node is None:
        raise r.error("ONBUILD requires at least one argument")
    r.parse_flags()
    trigger_name = trigger_node.name.upper()
    if trigger_name == "ONBUILD":
        raise r.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger_name in ("MAINTAINER", "FROM"):
        raise r.error(f"{trigger_name} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX.sub("", r.node.original, count=1)
    for doc in r.node.heredocs:
        expression += "\n" + doc.content + doc.name
    trigger_node.start_line, trigger_node.end_line = r.node.start_line, r.node.end_line
    trigger_node.heredocs = r.node.heredocs
    try:
        trigger: Instruction | None = parse_instruction(trigger_node)
        problem = ""
    except DockerfileError as err:
        trigger = None
        problem = f"{err.message} ({err.hint})" if err.hint else err.message
    return r.make(Onbuild, expression=expression, trigger=trigger, trigger_problem=problem)


def _parse_workdir(r: _Request) -> Workdir:
    if len(r.args) != 1:
        raise r.error("WORKDIR requires exactly one argument")
    r.parse_flags()
    return r.make(Workdir, path=r.args[0])


def _parse_run(r: _Request) -> Run:
    f = r.parse_flags({"mount": STRINGS, "network": STRING, "security": STRING})
    for spec in f.strings("mount"):
        try:
            check_mount_syntax(spec)
        except MountError as err:
            raise r.error(str(err), err.hint) from None
    network = f.string("network", "default")
    if network not in ("default", "none", "host"):
        raise r.error(f"invalid network mode {network!r}", "use default, none or host")
    security = f.string("security", "sandbox")
    if security not in ("sandbox", "insecure"):
        raise r.error(f"security {security!r} is not valid", "use sandbox or insecure")
    return r.make(
        Run,
        command=r.command_line(),
        shell_form=not r.node.json,
        heredocs=tuple(InlineFile(d.name, d.content, d.chomp, d.expand) for d in r.node.heredocs),
        mounts=f.strings("mount"),
        network=network,
        security=security,
    )


def _parse_cmd(r: _Request) -> Cmd:
    r.parse_flags()
    return r.make(Cmd, command=r.command_line(), shell_form=not r.node.json)


def _parse_entrypoint(r: _Request) -> Entrypoint:
    r.parse_flags()
    return r.make(Entrypoint, command=r.command_line(), shell_form=not r.node.json)


def _interval(r: _Request, flags: Flags, name: str) -> int:
    text = flags.string(name)
    if not text:
        return 0
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise r.error(f"HEALTHCHECK --{name}: {err}") from None
    if value != 0 and value < 1_000_000:
        raise r.error(f"HEALTHCHECK --{name} cannot be less than 1ms (got {text})")
    return value


def _parse_healthcheck(r: _Request) -> Healthcheck:
    if not r.args:
        raise r.error("HEALTHCHECK requires at least one argument")
    kind = r.args[0].upper()
    rest = r.args[1:]
    if kind == "NONE":
        if rest:
            raise r.error("HEALTHCHECK NONE takes no arguments")
        r.parse_flags()
        return r.make(Healthcheck, test=("NONE",))
    f = r.parse_flags(
        {"interval": STRING, "timeout": STRING, "start-period": STRING,
         "start-interval": STRING, "retries": STRING}
    )  # fmt: skip
    if kind != "CMD":
        raise r.error(f"unknown type {r.args[0]!r} in HEALTHCHECK", "try CMD")
    command = tuple(rest) if r.node.json else ((" ".join(rest),) if rest else ())
    if not command:
        raise r.error("Missing command after HEALTHCHECK CMD")
    retries = 0
    if f.string("retries"):
        try:
            retries = int(f.string("retries"), 10)
        except ValueError:
            text = f.string("retries")
            raise r.error(f"HEALTHCHECK --retries must be a number, not {text!r}") from None
        if retries < 0:
            raise r.error(f"--retries cannot be negative ({retries})")
    return r.make(
        Healthcheck,
        test=(kind if r.node.json else "CMD-SHELL", *command),
        interval=_interval(r, f, "interval"),
        timeout=_interval(r, f, "timeout"),
        start_period=_interval(r, f, "start-period"),
        start_interval=_interval(r, f, "start-interval"),
        retries=retries,
    )


def _parse_expose(r: _Request) -> Expose:
    if not r.args:
        raise r.error("EXPOSE requires at least one argument")
    r.parse_flags()
    return r.make(Expose, ports=tuple(sorted(r.args)))


def _parse_user(r: _Request) -> User:
    if len(r.args) != 1:
        raise r.error("USER requires exactly one argument")
    r.parse_flags()
    return r.make(User, user=r.args[0])


def _parse_volume(r: _Request) -> Volume:
    if not r.args:
        raise r.error("VOLUME requires at least one argument")
    r.parse_flags()
    volumes = tuple(v.strip() for v in r.args)
    if "" in volumes:
        raise r.error("VOLUME specified can not be an empty string")
    return r.make(Volume, volumes=volumes)


def _parse_stopsignal(r: _Request) -> StopSignal:
    if len(r.args) != 1:
        raise r.error("STOPSIGNAL requires exactly one argument")
    r.parse_flags()
    return r.make(StopSignal, signal=r.args[0])


def _parse_arg(r: _Request) -> Arg:
    if not r.args:
        raise r.error("ARG requires at least one argument")
    r.parse_flags()
    definitions = []
    for word in r.args:
        key, has_default, default = word.partition("=")
        if has_default and not key:
            raise r.error("ARG names can not be blank")
        comment = next((c[len(key) + 1 :] for c in r.node.comments if c.startswith(key + " ")), "")
        definitions.append(ArgDefinition(key, default if has_default else None, comment))
    return r.make(Arg, args=tuple(definitions))


def _parse_shell(r: _Request) -> Shell:
    r.parse_flags()
    if not r.args:
        raise r.error("SHELL requires at least one argument")
    if not r.node.json:
        raise r.error(
            "SHELL requires the arguments to be in JSON form", 'write SHELL ["/bin/sh", "-c"]'
        )
    return r.make(Shell, shell=tuple(r.args))


_PARSERS = {
    "add": _parse_add,
    "arg": _parse_arg,
    "cmd": _parse_cmd,
    "copy": _parse_copy,
    "entrypoint": _parse_entrypoint,
    "env": _parse_env,
    "expose": _parse_expose,
    "from": _parse_from,
    "healthcheck": _parse_healthcheck,
    "label": _parse_label,
    "maintainer": _parse_maintainer,
    "onbuild": _parse_onbuild,
    "run": _parse_run,
    "shell": _parse_shell,
    "stopsignal": _parse_stopsignal,
    "user": _parse_user,
    "volume": _parse_volume,
    "workdir": _parse_workdir,
}
