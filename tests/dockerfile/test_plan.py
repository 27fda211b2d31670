"""Build planning: ARG scoping, platforms, stage graph, inheritance and base images."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.dockerfile.instructions import Copy, Env, Run, Workdir
from kiln.dockerfile.plan import BaseImageConfig, StagePlan
from kiln.errors import DockerfileError
from kiln.platform import Platform
from tests.dockerfile.support import DEFAULT_PATH, plan, steps, target_stage, warnings

ARM64 = Platform("linux", "arm64")
ARMV7 = Platform("linux", "arm", "v7")


def env_values(text: str, **options: Any) -> dict[str, str]:
    """The pairs of the target stage's last ENV, after expansion."""
    env = [s.instruction for s in steps(text, **options) if isinstance(s.instruction, Env)][-1]
    return {pair.key: pair.value for pair in env.pairs}


def plan_error(text: str, **options: Any) -> DockerfileError:
    with pytest.raises(DockerfileError) as caught:
        plan(text, **options)
    return caught.value


def indexes(text: str, **options: Any) -> list[int]:
    return [s.stage.index for s in plan(text, **options).stages]


# -- ARG scoping -------------------------------------------------------------------------------


def test_global_arg_is_used_in_from() -> None:
    assert target_stage("ARG TAG=3.19\nFROM alpine:${TAG}\n").base == "alpine:3.19"


def test_global_arg_is_not_visible_inside_a_stage() -> None:
    text = "ARG TAG=3.19\nFROM alpine\nENV SEEN=x$TAG\n"
    assert env_values(text) == {"SEEN": "x"}
    assert any("'$TAG'" in m for m in warnings(text))


def test_redeclared_arg_without_default_inherits_the_global_value() -> None:
    assert env_values("ARG TAG=3.19\nFROM alpine\nARG TAG\nENV SEEN=$TAG\n") == {"SEEN": "3.19"}


def test_redeclared_arg_with_a_default_uses_its_own_default() -> None:
    assert env_values("ARG TAG=3.19\nFROM alpine\nARG TAG=edge\nENV SEEN=$TAG\n") == {
        "SEEN": "edge"
    }


def test_redeclaring_a_global_without_any_value_leaves_it_unset() -> None:
    text = "ARG TAG\nFROM alpine\nARG TAG\nENV SEEN=${TAG-unset}\n"
    assert env_values(text) == {"SEEN": "unset"}
    # ... but declared, so using it is not an undefined variable.
    assert warnings(text) == []


def test_undeclared_global_stays_invisible_even_with_a_build_arg() -> None:
    text = "ARG TAG=3.19\nFROM alpine\nENV SEEN=x$TAG\n"
    assert env_values(text, build_args={"TAG": "edge"}) == {"SEEN": "x"}


def test_arg_default_is_expanded_with_the_current_env() -> None:
    text = "FROM alpine\nENV BASE=/opt\nARG A=1\nARG DIR=$BASE/app-$A\nENV SEEN=$DIR\n"
    assert env_values(text) == {"SEEN": "/opt/app-1"}


def test_global_arg_default_may_use_an_earlier_global() -> None:
    assert target_stage("ARG V=3\nARG IMG=alpine:$V.19\nFROM $IMG\n").base == "alpine:3.19"


def test_global_arg_default_sees_the_build_arg_of_an_earlier_global() -> None:
    stage = target_stage("ARG V=3\nARG IMG=alpine:$V\nFROM $IMG\n", build_args={"V": "edge"})
    assert stage.base == "alpine:edge"


def test_build_arg_overrides_global_default_in_from() -> None:
    stage = target_stage("ARG TAG=3.19\nFROM alpine:$TAG\n", build_args={"TAG": "edge"})
    assert stage.base == "alpine:edge"


def test_build_arg_overrides_a_stage_default_and_the_global() -> None:
    text = "ARG V=global\nFROM alpine\nARG V=stage\nENV SEEN=$V\n"
    assert env_values(text, build_args={"V": "cli"}) == {"SEEN": "cli"}


def test_build_arg_may_set_an_empty_value() -> None:
    text = "FROM alpine\nARG V=default\nENV SEEN=${V-unset}\n"
    assert env_values(text, build_args={"V": ""}) == {"SEEN": ""}


def test_env_after_arg_wins() -> None:
    text = "FROM alpine\nARG V=from-arg\nENV V=from-env\nENV SEEN=$V\n"
    assert env_values(text, build_args={"V": "cli"}) == {"SEEN": "from-env"}


def test_arg_values_reach_run_steps_but_not_the_image() -> None:
    stage = target_stage("FROM alpine\nARG SECRETISH=1\nENV KEPT=2\nRUN make\n")
    run = stage.steps[-1]
    assert isinstance(run.instruction, Run)
    assert dict(run.env)["SECRETISH"] == "1"
    assert dict(run.env)["KEPT"] == "2"
    assert dict(stage.env) == {"PATH": DEFAULT_PATH, "KEPT": "2"}


def test_step_env_is_the_env_before_the_step() -> None:
    first, second, third = steps("FROM alpine\nENV A=1\nENV B=2\nRUN x\n")
    assert "A" not in dict(first.env)
    assert dict(second.env)["A"] == "1"
    assert "B" not in dict(second.env)
    assert dict(third.env)["B"] == "2"


def test_arg_without_value_is_not_in_the_run_env() -> None:
    run = steps("FROM alpine\nARG MAYBE\nRUN x\n")[-1]
    assert "MAYBE" not in dict(run.env)


def test_stages_do_not_share_args() -> None:
    text = "FROM alpine AS one\nARG V=1\nFROM alpine\nENV SEEN=x$V\n"
    assert env_values(text) == {"SEEN": "x"}


def test_global_args_are_reported_in_the_plan() -> None:
    result = plan("ARG A=1\nARG B=$A-2\nFROM alpine\n", build_args={"A": "9"})
    globals_ = dict(result.global_args)
    assert (globals_["A"], globals_["B"]) == ("9", "9-2")


# -- predefined platform args ------------------------------------------------------------------


def test_platform_args_are_available_in_from_without_declaration() -> None:
    stage = target_stage("FROM alpine:$TARGETOS-$TARGETARCH\n", platform=ARM64)
    assert stage.base == "alpine:linux-arm64"
    assert warnings("FROM alpine:$TARGETARCH\n") == []


def test_platform_args_in_a_stage_need_a_declaration() -> None:
    text = "FROM alpine\nENV SEEN=x$TARGETARCH\n"
    assert env_values(text, platform=ARM64) == {"SEEN": "x"}
    declared = "FROM alpine\nARG TARGETARCH\nENV SEEN=x$TARGETARCH\n"
    assert env_values(declared, platform=ARM64) == {"SEEN": "xarm64"}


def test_platform_option_sets_every_target_arg() -> None:
    text = (
        "FROM alpine\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT\n"
        "ENV P=$TARGETPLATFORM O=$TARGETOS A=$TARGETARCH V=$TARGETVARIANT\n"
    )
    assert env_values(text, platform=ARMV7) == {
        "P": "linux/arm/v7",
        "O": "linux",
        "A": "arm",
        "V": "v7",
    }
    amd64 = env_values(text)
    assert (amd64["P"], amd64["A"], amd64["V"]) == ("linux/amd64", "amd64", "")


def test_build_platform_args_describe_the_build_machine() -> None:
    result = plan(
        "FROM alpine\nARG BUILDPLATFORM BUILDOS BUILDARCH\n"
        "ENV P=$BUILDPLATFORM O=$BUILDOS A=$BUILDARCH\n",
        platform=ARMV7,
    )
    env = result.target_stage.steps[-1].instruction
    assert isinstance(env, Env)
    build = result.build_platform
    assert [p.value for p in env.pairs] == [str(build), build.os, build.architecture]
    assert result.target_platform == ARMV7


def test_from_platform_build_platform() -> None:
    result = plan(
        "FROM --platform=$BUILDPLATFORM golang AS build\nFROM alpine\nCOPY --from=build / /\n",
        platform=ARMV7,
    )
    build, final = result.stages
    assert build.platform == result.build_platform
    assert final.platform == ARMV7


def test_from_platform_literal() -> None:
    assert target_stage("FROM --platform=linux/arm64 alpine\n").platform == ARM64


def test_from_platform_from_a_global_arg() -> None:
    text = "ARG PLATFORM=linux/arm64\nFROM --platform=$PLATFORM alpine\n"
    assert target_stage(text).platform == ARM64
    assert target_stage(text, build_args={"PLATFORM": "linux/arm/v7"}).platform == ARMV7


def test_stage_platform_does_not_change_target_args() -> None:
    text = "FROM --platform=linux/arm64 alpine\nARG TARGETARCH\nENV SEEN=$TARGETARCH\n"
    assert env_values(text) == {"SEEN": "amd64"}


def test_platform_args_may_be_overridden_by_build_args() -> None:
    stage = target_stage("FROM alpine:$TARGETARCH\n", build_args={"TARGETARCH": "riscv64"})
    assert stage.base == "alpine:riscv64"


def test_empty_from_platform_is_an_error_with_a_suggestion() -> None:
    err = plan_error("FROM --platform=$TARGETPLATFRM alpine\n")
    assert err.line == 1
    assert "empty platform value from expression $TARGETPLATFRM" in str(err)
    assert "did you mean $TARGETPLATFORM?" in str(err)


def test_invalid_from_platform_is_an_error() -> None:
    assert plan_error("FROM --platform=nonsense/os/x/y alpine\n").line == 1


# -- build args and warnings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
     "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"],
)  # fmt: skip
def test_proxy_build_args_need_no_declaration(name: str) -> None:
    assert warnings("FROM alpine\nRUN x\n", build_args={name: "http://proxy:3128"}) == []


def test_proxy_build_args_reach_run_steps_but_not_the_image_env() -> None:
    text = "FROM scratch\nRUN wget example.org\n"
    result = plan(text, build_args={"https_proxy": "http://proxy:3128", "OTHER": "x"})
    assert result.proxy_env == (("https_proxy", "http://proxy:3128"),)
    assert "https_proxy" not in dict(result.target_stage.env)
    assert "https_proxy" not in dict(result.target_stage.steps[-1].env)


def test_unconsumed_build_arg_warns() -> None:
    messages = warnings("FROM alpine\nARG USED\n", build_args={"USED": "1", "TYPO": "2"})
    assert len(messages) == 1
    assert "TYPO" in messages[0]


def test_build_arg_consumed_by_a_global_arg_does_not_warn() -> None:
    assert warnings("ARG ONLY_GLOBAL\nFROM alpine\n", build_args={"ONLY_GLOBAL": "1"}) == []


def test_undefined_variable_warning_names_the_line_and_suggests() -> None:
    result = plan("FROM alpine\nENV VERSION=1\nENV OTHER=$VERSOIN\n")
    (warning,) = result.warnings
    assert warning.line == 3
    assert "undefined variable '$VERSOIN'" in warning.message
    assert "did you mean $VERSION?" in warning.message


def test_undefined_variable_without_close_match() -> None:
    (message,) = warnings("FROM alpine\nWORKDIR /$NOTHING_LIKE_IT\n")
    assert "undefined variable '$NOTHING_LIKE_IT'" in message
    assert "did you mean" not in message


def test_no_warning_for_variables_with_defaults_or_defined_by_the_base_image() -> None:
    def resolve(name: str, platform: Platform) -> BaseImageConfig:
        return BaseImageConfig(env=("FROM_IMAGE=1",))

    text = "FROM img\nENV A=$FROM_IMAGE\n"
    assert warnings(text, resolve_base=resolve) == []


# -- reachability and dependencies ------------------------------------------------------------

_GRAPH = (
    "FROM alpine AS base\n"  # 0
    "FROM alpine AS tools\n"  # 1
    "FROM alpine AS unused\n"  # 2
    "FROM base AS build\n"  # 3: base stage
    "COPY --from=tools /bin/tool /bin/\n"
    "COPY --from=1 /x /x\n"
    "FROM alpine AS assets\n"  # 4
    "FROM alpine AS final\n"  # 5
    "COPY --from=build /out /app\n"
    "RUN --mount=from=assets,target=/assets cp -r /assets /app\n"
)


def test_only_stages_reachable_from_the_target_are_planned() -> None:
    assert indexes(_GRAPH) == [0, 1, 3, 4, 5]
    assert indexes(_GRAPH, target="build") == [0, 1, 3]
    assert indexes(_GRAPH, target="unused") == [2]


def test_dependencies_through_base_copy_from_and_mounts() -> None:
    result = plan(_GRAPH)
    by_name: dict[str, StagePlan] = {s.stage.name: s for s in result.stages}
    assert by_name["build"].base_stage == 0
    assert set(by_name["build"].dependencies) == {0, 1}
    assert set(by_name["final"].dependencies) == {3, 4}
    assert by_name["base"].dependencies == ()
    assert result.target_stage.stage.name == "final"


def test_all_stages_plans_unreachable_stages_too() -> None:
    assert indexes(_GRAPH, all_stages=True) == [0, 1, 2, 3, 4, 5]


def test_target_is_case_insensitive() -> None:
    assert plan(_GRAPH, target="BUILD").target_stage.stage.index == 3


def test_copy_from_an_image_is_not_a_stage() -> None:
    stage = target_stage("FROM alpine\nCOPY --from=nginx:latest /etc/nginx /etc/nginx\n")
    assert stage.dependencies == ()
    assert "nginx:latest" in stage.images


def test_secret_mount_ids_are_not_stage_references() -> None:
    text = "FROM alpine AS tok\nFROM alpine\nRUN --mount=type=secret,id=tok,target=/t cat /t\n"
    assert indexes(text) == [1]


def test_target_not_found() -> None:
    err = plan_error("FROM alpine AS builder\nFROM alpine\n", target="nope")
    assert str(err) == 'Dockerfile: target stage "nope" could not be found'
    assert err.line is None


def test_target_not_found_suggests_a_stage() -> None:
    err = plan_error("FROM alpine AS builder\nFROM alpine\n", target="buildr")
    assert "did you mean builder?" in str(err)


def test_target_cannot_be_an_index() -> None:
    assert "could not be found" in str(plan_error("FROM alpine\nFROM alpine\n", target="0"))


def test_circular_dependency() -> None:
    err = plan_error(
        "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n"
    )
    assert "circular dependency detected on stage: a" in str(err)


def test_stage_copying_from_itself_is_circular() -> None:
    assert "circular dependency" in str(plan_error("FROM alpine AS a\nCOPY --from=a /x /y\n"))


def test_copy_from_a_later_stage_is_an_error() -> None:
    err = plan_error(
        "FROM alpine AS first\nCOPY --from=later /x /x\nFROM alpine AS later\n", target="first"
    )
    assert str(err) == (
        'Dockerfile:2: cannot copy from stage "later", it needs to be defined before '
        'current stage "first"'
    )


def test_copy_from_a_later_stage_names_an_unnamed_stage_by_index() -> None:
    err = plan_error(
        "FROM alpine\nCOPY --from=later /a /a\n"
        "FROM alpine AS later\n"
        "FROM alpine\nCOPY --from=0 /a /a\n"
    )
    assert 'cannot copy from stage "later"' in str(err)
    assert 'current stage "stage-0"' in str(err)


@pytest.mark.parametrize("reference", ["1", "LATER"])
def test_forward_copy_error_quotes_from_as_written(reference: str) -> None:
    err = plan_error(
        f"FROM alpine AS first\nCOPY --from={reference} /x /x\nFROM alpine AS later\n",
        target="first",
    )
    assert f'cannot copy from stage "{reference}",' in str(err)


def test_mount_from_a_later_stage_is_an_error() -> None:
    err = plan_error(
        "FROM alpine AS first\nRUN --mount=from=later,target=/m true\nFROM alpine AS later\n",
        target="first",
    )
    assert err.line == 2
    assert 'cannot mount from stage "later"' in str(err)


def test_mount_from_a_later_stage_message_matches_buildkit() -> None:
    err = plan_error(
        "FROM alpine AS first\nRUN --mount=from=later,target=/m true\nFROM alpine AS later\n",
        target="first",
    )
    assert (
        'cannot mount from stage "later" to "/m", stage needs to be defined before current '
        "command" in str(err)
    )


def test_invalid_stage_index() -> None:
    err = plan_error("FROM alpine\nCOPY --from=7 /x /x\n")
    assert err.line == 2
    assert "invalid stage index 7" in str(err)


def test_mount_from_a_number_is_an_image_not_an_index() -> None:
    stage = target_stage("FROM alpine AS zero\nFROM alpine\nRUN --mount=from=0,target=/m true\n")
    assert stage.dependencies == ()


@pytest.mark.parametrize("text", ["ARG IMG\nFROM $IMG\n", "FROM ${UNDEFINED}\n"])
def test_blank_base_name_is_an_error(text: str) -> None:
    err = plan_error(text)
    assert "should not be blank" in str(err)
    assert "base name (" in str(err)
    assert err.line == text.count("\n")


def test_from_names_only_earlier_stages() -> None:
    result = plan("FROM later AS first\nFROM alpine AS later\n", target="first")
    assert (result.target_stage.base, result.target_stage.base_stage) == ("later", None)


def test_repeated_stage_name_refers_to_the_latest_earlier_one() -> None:
    stage = target_stage("FROM alpine AS x\nFROM busybox AS x\nFROM x\n")
    assert stage.base_stage == 1


def test_base_from_a_build_arg_can_select_a_stage() -> None:
    text = "ARG VARIANT=dev\nFROM alpine AS dev\nFROM alpine AS prod\nFROM $VARIANT\n"
    assert target_stage(text).base_stage == 0
    assert target_stage(text, build_args={"VARIANT": "prod"}).base_stage == 1


# -- inheritance from a parent stage ----------------------------------------------------------


def test_child_stage_inherits_env_workdir_and_arg_values() -> None:
    stage = target_stage(
        "FROM alpine AS parent\nARG V=1\nENV A=1\nWORKDIR /app\nFROM parent\nENV B=$A$V\n"
    )
    assert dict(stage.env) == {"PATH": DEFAULT_PATH, "A": "1", "B": "11"}
    assert stage.workdir == "/app"


def test_child_runs_the_parents_onbuild_triggers_first() -> None:
    stage = target_stage(
        "FROM alpine AS base\nENV A=1\nONBUILD RUN echo trig\nONBUILD ENV B=$A\n"
        "ENV A=2\nFROM base AS child\nRUN echo child\n"
    )
    assert [(type(s.instruction).__name__, s.onbuild) for s in stage.steps] == [
        ("Run", True),
        ("Env", True),
        ("Run", False),
    ]
    trigger_env = stage.steps[1].instruction
    assert isinstance(trigger_env, Env)
    # The trigger is expanded in the child's scope, where A is already 2.
    assert [(p.key, p.value) for p in trigger_env.pairs] == [("B", "2")]
    assert dict(stage.env)["B"] == "2"


def test_onbuild_does_not_run_in_the_stage_that_declares_it() -> None:
    stage = target_stage("FROM alpine\nONBUILD RUN echo later\n")
    assert [s.onbuild for s in stage.steps] == [False]


def test_grandchild_does_not_rerun_grandparent_triggers() -> None:
    stage = target_stage(
        "FROM alpine AS a\nONBUILD RUN echo once\nFROM a AS b\nFROM b AS c\nRUN echo c\n"
    )
    assert [s.onbuild for s in stage.steps] == [False]


def test_onbuild_copy_from_a_stage_is_a_dependency() -> None:
    result = plan(
        "FROM alpine AS assets\nFROM alpine AS base\nONBUILD COPY --from=assets /a /a\nFROM base\n"
    )
    assert set(result.target_stage.dependencies) == {0, 1}
    first = result.target_stage.steps[0]
    assert first.onbuild
    assert isinstance(first.instruction, Copy)


def test_child_knows_the_args_its_parent_declared() -> None:
    assert warnings("FROM alpine AS base\nARG V\nFROM base\nENV X=$V\n") == []


# -- WORKDIR ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workdirs", "final"),
    [
        (["/app"], "/app"),
        (["app"], "/app"),
        (["/a", "b", "c"], "/a/b/c"),
        (["/a/b", ".."], "/a"),
        (["/a", "b/../c/./d"], "/a/c/d"),
        # BuildKit's NormalizeWorkdir keeps an absolute path as written, config and all
        (["/x//y/"], "/x//y/"),
        (["/app/"], "/app/"),
        (["/app/", "sub/"], "/app/sub"),
        (["/", "..", ".."], "/"),
        (["/a", "/b"], "/b"),
    ],
)
def test_workdir_normalisation(workdirs: list[str], final: str) -> None:
    text = "FROM alpine\n" + "".join(f"WORKDIR {w}\n" for w in workdirs)
    assert target_stage(text).workdir == final


def test_step_workdir_is_the_directory_the_step_runs_in() -> None:
    stage = target_stage("FROM alpine\nRUN a\nWORKDIR /srv\nRUN b\nWORKDIR sub\nRUN c\n")
    runs = [s for s in stage.steps if isinstance(s.instruction, Run)]
    assert [s.workdir for s in runs] == ["/", "/srv", "/srv/sub"]
    workdir = stage.steps[-2].instruction
    assert isinstance(workdir, Workdir)
    assert workdir.path == "sub"  # the instruction keeps its own (expanded) path


def test_workdir_with_variables() -> None:
    assert target_stage("FROM alpine\nENV HOME=/home/me\nWORKDIR $HOME/src\n").workdir == (
        "/home/me/src"
    )


# -- base images ------------------------------------------------------------------------------


def test_default_path_when_the_base_image_is_unknown() -> None:
    stage = target_stage("FROM alpine\nENV P=$PATH:/opt/bin\n")
    assert dict(stage.env) == {"PATH": DEFAULT_PATH, "P": DEFAULT_PATH + ":/opt/bin"}
    assert stage.workdir == "/"


def test_scratch_gets_the_default_path_and_is_not_resolved() -> None:
    calls: list[str] = []

    def resolve(name: str, platform: Platform) -> BaseImageConfig:
        calls.append(name)
        return BaseImageConfig()

    stage = target_stage("FROM scratch\n", resolve_base=resolve)
    assert dict(stage.env) == {"PATH": DEFAULT_PATH}
    assert calls == []


def test_base_image_config_supplies_env_workdir_and_triggers() -> None:
    seen: list[tuple[str, Platform]] = []

    def resolve(name: str, platform: Platform) -> BaseImageConfig:
        seen.append((name, platform))
        return BaseImageConfig(
            env=("PATH=/custom/bin", "LANG=C.UTF-8", "EMPTY="),
            working_dir="/srv",
            onbuild=("RUN echo from-image",),
        )

    stage = target_stage(
        "ARG TAG=1\nFROM python:$TAG\nENV GREETING=$LANG-$PATH\nWORKDIR app\n",
        platform=ARM64,
        resolve_base=resolve,
    )
    assert seen == [("python:1", ARM64)]
    assert dict(stage.env) == {
        "PATH": "/custom/bin",
        "LANG": "C.UTF-8",
        "EMPTY": "",
        "GREETING": "C.UTF-8-/custom/bin",
    }
    assert stage.workdir == "/srv/app"
    first = stage.steps[0]
    assert first.onbuild
    assert isinstance(first.instruction, Run)
    assert first.instruction.command == ("echo from-image",)


def test_base_image_without_path_gets_the_default_path() -> None:
    def resolve(name: str, platform: Platform) -> BaseImageConfig:
        return BaseImageConfig(env=("HOME=/root",))

    stage = target_stage("FROM img\n", resolve_base=resolve)
    assert dict(stage.env) == {"HOME": "/root", "PATH": DEFAULT_PATH}


def test_base_image_env_can_be_overridden() -> None:
    def resolve(name: str, platform: Platform) -> BaseImageConfig:
        return BaseImageConfig(env=("MODE=image",))

    stage = target_stage("FROM img\nENV MODE=dockerfile\n", resolve_base=resolve)
    assert dict(stage.env)["MODE"] == "dockerfile"


def test_stage_based_on_a_stage_does_not_resolve_an_image() -> None:
    calls: list[str] = []

    def resolve(name: str, platform: Platform) -> BaseImageConfig:
        calls.append(name)
        return BaseImageConfig(env=("FROM_IMAGE=1",))

    stage = target_stage(
        "FROM alpine AS base\nFROM base\nENV X=$FROM_IMAGE\n", resolve_base=resolve
    )
    assert calls == ["alpine"]
    assert dict(stage.env)["X"] == "1"


def test_reserved_and_duplicate_stage_names_are_warned() -> None:
    text = "FROM alpine AS scratch\nFROM alpine AS app\nFROM alpine AS app\n"
    messages = [(w.line, w.message) for w in plan(text).warnings]
    assert messages == [
        (1, "'scratch' is reserved and should not be used as a stage name"),
        (3, 'duplicate stage name "app" (first on line 2), stage names should be unique'),
    ]
