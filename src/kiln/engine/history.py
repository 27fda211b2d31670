"""History entries (``created_by``) worded as BuildKit words them.

Values are the expanded ones; steps that make a layer end in `` # buildkit``; RUN lists the
build args of its stage (``|2 A=1 B=2``) before the command, the way BuildKit records them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kiln.dockerfile.gostr import go_duration, go_quote, go_quote_rune
from kiln.dockerfile.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)

LAYER_SUFFIX = " # buildkit"


def created_by(
    instruction: Instruction,
    *,
    run_args: Sequence[str] = (),
    build_args: Mapping[str, str] | None = None,
    workdir: str = "",
    command: Sequence[str] = (),
) -> str:
    """The history text of one step (``run_args``: the RUN's argv; ``workdir``: the
    resolved WORKDIR; ``command``: what a CMD or ENTRYPOINT set, its shell included)."""
    if isinstance(instruction, Run):
        prefix = ""
        if build_args:
            pairs = " ".join(f"{k}={v}" for k, v in build_args.items())
            prefix = f"|{len(build_args)} {pairs} "
        return f"RUN {prefix}{' '.join(run_args)}{LAYER_SUFFIX}"
    if isinstance(instruction, Copy | Add):
        words = [instruction.name]
        if instruction.chown:
            words.append(f"--chown={instruction.chown}")
        if instruction.chmod:
            words.append(f"--chmod={instruction.chmod}")
        words += [*instruction.sources, *(f"<<{f.name}" for f in instruction.inline)]
        words.append(instruction.dest)
        return " ".join(words) + LAYER_SUFFIX
    if isinstance(instruction, Workdir):
        return f"WORKDIR {workdir}"
    if isinstance(instruction, Env | Label):
        pairs = " ".join(f"{p.key}={p.value}" for p in instruction.pairs)
        return f"{instruction.name} {pairs}"
    if isinstance(instruction, Arg):
        return "ARG " + " ".join(
            a.key if a.default is None else f"{a.key}={a.default}" for a in instruction.args
        )
    if isinstance(instruction, Cmd | Entrypoint):
        return f"{instruction.name} {_go_list(command or instruction.command, quoted=True)}"
    if isinstance(instruction, Shell):
        return f"SHELL {_go_list(instruction.shell, quoted=False)}"
    if isinstance(instruction, Volume):
        return f"VOLUME {_go_list(instruction.volumes, quoted=False)}"
    if isinstance(instruction, Expose):
        ports = " ".join(f"{p if '/' in p else p + '/tcp'}:{{}}" for p in sorted(instruction.ports))
        return f"EXPOSE map[{ports}]"
    if isinstance(instruction, User):
        return f"USER {instruction.user}"
    if isinstance(instruction, StopSignal):
        return f"STOPSIGNAL {instruction.signal}"
    if isinstance(instruction, Onbuild):
        return f"ONBUILD {instruction.expression}"
    if isinstance(instruction, Maintainer):
        return f"MAINTAINER {instruction.maintainer}"
    if isinstance(instruction, Healthcheck):
        # Go's %q of BuildKit's HealthcheckConfig: Test, four durations, Retries as a rune
        durations = (instruction.interval, instruction.timeout, instruction.start_period,
                     instruction.start_interval)  # fmt: skip
        fields = [
            _go_list(instruction.test, quoted=True),
            *(go_quote(go_duration(d)) for d in durations),
            go_quote_rune(instruction.retries),
        ]
        return "HEALTHCHECK &{" + " ".join(fields) + "}"
    return " ".join(instruction.source.split())


def _go_list(values: Sequence[str], *, quoted: bool) -> str:
    """Go's ``%q`` / ``%v`` of a string slice: ``["a" "b"]`` / ``[a b]``."""
    items = [go_quote(v) for v in values] if quoted else list(values)
    return "[" + " ".join(items) + "]"
