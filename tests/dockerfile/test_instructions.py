"""Every instruction's typed form, its flags, and the errors a malformed one gives."""

from __future__ import annotations

import pytest

from kiln.dockerfile.document import Stage
from kiln.dockerfile.instructions import (
    Add,
    Arg,
    ArgDefinition,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    KeyValue,
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
from kiln.errors import DockerfileError
from tests.dockerfile.support import body, dockerfile, only, plan

SECOND = 1_000_000_000


def error(text: str, file: str = "Dockerfile") -> DockerfileError:
    with pytest.raises(DockerfileError) as caught:
        dockerfile(text, file=file)
    return caught.value


def stage_error(text: str) -> DockerfileError:
    """The error of ``text`` written after ``FROM scratch`` (so on line 2 onwards)."""
    return error("FROM scratch\n" + text)


# -- RUN, CMD, ENTRYPOINT, SHELL -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "keyword"), [(Run, "RUN"), (Cmd, "CMD"), (Entrypoint, "ENTRYPOINT")]
)
def test_exec_form_is_a_list(cls: type, keyword: str) -> None:
    instruction = only(f'{keyword} ["echo", "a b", "$HOME"]\n')
    assert isinstance(instruction, cls)
    assert isinstance(instruction, Run | Cmd | Entrypoint)
    assert instruction.command == ("echo", "a b", "$HOME")
    assert instruction.shell_form is False


@pytest.mark.parametrize(
    ("cls", "keyword"), [(Run, "RUN"), (Cmd, "CMD"), (Entrypoint, "ENTRYPOINT")]
)
def test_shell_form_is_one_string_as_written(cls: type, keyword: str) -> None:
    instruction = only(f'{keyword} echo  "a b" && exit 1\n')
    assert isinstance(instruction, cls)
    assert isinstance(instruction, Run | Cmd | Entrypoint)
    assert instruction.command == ('echo  "a b" && exit 1',)
    assert instruction.shell_form is True


def test_json_form_tolerates_surrounding_whitespace_and_escapes() -> None:
    cmd = only('CMD   [ "a\\"b" , "\\u00e9" ]  \n')
    assert isinstance(cmd, Cmd)
    assert (cmd.command, cmd.shell_form) == (('a"b', "é"), False)


def test_invalid_json_falls_back_to_shell_form() -> None:
    for text in ("RUN [notjson\n", "RUN ['single', 'quotes']\n", 'RUN ["unterminated\n'):
        run = only(text)
        assert isinstance(run, Run)
        assert run.shell_form is True
        assert run.command == (text[4:-1],)


def test_json_array_of_non_strings_is_an_error() -> None:
    err = stage_error('CMD ["echo", 1]\n')
    assert err.line == 2
    assert "arrays must be comprised of strings only" in str(err)


def test_empty_exec_form() -> None:
    cmd = only("CMD []\n")
    assert isinstance(cmd, Cmd)
    assert (cmd.command, cmd.shell_form) == ((), False)


def test_shell_json_form() -> None:
    shell = only('SHELL ["powershell", "-command"]\n')
    assert isinstance(shell, Shell)
    assert shell.shell == ("powershell", "-command")


def test_shell_requires_json_form() -> None:
    err = stage_error("SHELL powershell -command\n")
    assert err.line == 2
    assert "SHELL requires the arguments to be in JSON form" in str(err)


def test_shell_requires_an_argument() -> None:
    assert "SHELL requires at least one argument" in str(stage_error("SHELL []\n"))


# -- ENV, LABEL, ARG, MAINTAINER -----------------------------------------------------------------


def test_env_key_value_pairs_keep_quotes_until_expansion() -> None:
    env = only('ENV A=1 B="two words" C=three\\ words D=\n')
    assert isinstance(env, Env)
    assert env.pairs == (
        KeyValue("A", "1"),
        KeyValue("B", '"two words"'),
        KeyValue("C", "three\\ words"),
        KeyValue("D", ""),
    )


def test_legacy_env_takes_the_rest_of_the_line_as_value() -> None:
    env = only("ENV GREETING hello   big world\n")
    assert isinstance(env, Env)
    assert env.pairs == (KeyValue("GREETING", "hello   big world", legacy=True),)


def test_legacy_env_needs_a_value() -> None:
    assert "ENV must have two arguments" in str(stage_error("ENV ALONE\n"))


def test_env_mixing_pairs_and_bare_words_is_an_error() -> None:
    err = stage_error("ENV A=1 B\n")
    assert "can't find = in" in str(err)
    assert '"B"' in str(err)


@pytest.mark.parametrize("keyword", ["ENV", "LABEL"])
def test_env_and_label_need_an_argument(keyword: str) -> None:
    assert f"{keyword} requires at least one argument" in str(stage_error(f"{keyword}\n"))


@pytest.mark.parametrize("keyword", ["ENV", "LABEL"])
def test_env_and_label_names_cannot_be_blank(keyword: str) -> None:
    assert f"{keyword} names can not be blank" in str(stage_error(f"{keyword} =value\n"))


def test_label_several_pairs_with_quotes() -> None:
    label = only('LABEL version=1.0 "com.example.vendor"="ACME Inc" description="a b"\n')
    assert isinstance(label, Label)
    assert label.pairs == (
        KeyValue("version", "1.0"),
        KeyValue('"com.example.vendor"', '"ACME Inc"'),
        KeyValue("description", '"a b"'),
    )
    # Quotes disappear when the plan expands the label.
    expanded = plan("FROM scratch\n" + label.source + "\n").target_stage.steps[0].instruction
    assert isinstance(expanded, Label)
    assert [(p.key, p.value) for p in expanded.pairs] == [
        ("version", "1.0"),
        ("com.example.vendor", "ACME Inc"),
        ("description", "a b"),
    ]


def test_legacy_label() -> None:
    label = only("LABEL maintainer someone@example.com\n")
    assert isinstance(label, Label)
    assert label.pairs == (KeyValue("maintainer", "someone@example.com", legacy=True),)


def test_arg_with_and_without_defaults() -> None:
    arg = only('ARG A=1 B C="x y" D=\n')
    assert isinstance(arg, Arg)
    assert arg.args == (
        ArgDefinition("A", "1"),
        ArgDefinition("B", None),
        ArgDefinition("C", '"x y"'),
        ArgDefinition("D", ""),
    )


def test_arg_errors() -> None:
    assert "ARG requires at least one argument" in str(stage_error("ARG\n"))
    assert "ARG names can not be blank" in str(stage_error("ARG =x\n"))


def test_maintainer() -> None:
    maintainer = only("MAINTAINER Jane Doe <jane@example.com>\n")
    assert isinstance(maintainer, Maintainer)
    assert maintainer.maintainer == "Jane Doe <jane@example.com>"


# -- EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL ---------------------------------------------------


def test_expose_ports_are_sorted_as_strings() -> None:
    expose = only("EXPOSE 8080 80/udp 443/tcp 22\n")
    assert isinstance(expose, Expose)
    assert expose.ports == ("22", "443/tcp", "80/udp", "8080")


def test_volume_json_and_list_forms() -> None:
    json_form, list_form = body('FROM scratch\nVOLUME ["/data", "/var/log"]\nVOLUME /a /b\n')
    assert isinstance(json_form, Volume)
    assert isinstance(list_form, Volume)
    assert json_form.volumes == ("/data", "/var/log")
    assert list_form.volumes == ("/a", "/b")


def test_volume_entries_are_trimmed_and_cannot_be_empty() -> None:
    volume = only('VOLUME [" /padded "]\n')
    assert isinstance(volume, Volume)
    assert volume.volumes == ("/padded",)
    assert "VOLUME specified can not be an empty string" in str(stage_error('VOLUME ["", "/a"]\n'))


def test_user_workdir_stopsignal_take_the_whole_rest_of_the_line() -> None:
    user, workdir, signal = body(
        "FROM scratch\nUSER app:staff\nWORKDIR /path with spaces\nSTOPSIGNAL SIGRTMIN+3\n"
    )
    assert isinstance(user, User)
    assert isinstance(workdir, Workdir)
    assert isinstance(signal, StopSignal)
    assert (user.user, workdir.path, signal.signal) == (
        "app:staff",
        "/path with spaces",
        "SIGRTMIN+3",
    )


@pytest.mark.parametrize("keyword", ["USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER"])
def test_exactly_one_argument(keyword: str) -> None:
    err = stage_error(f"{keyword}\n")
    assert f"{keyword} requires exactly one argument" in str(err)
    assert err.line == 2


@pytest.mark.parametrize("keyword", ["EXPOSE", "VOLUME", "ONBUILD", "HEALTHCHECK"])
def test_at_least_one_argument(keyword: str) -> None:
    assert f"{keyword} requires at least one argument" in str(stage_error(f"{keyword}\n"))


# -- HEALTHCHECK ---------------------------------------------------------------------------------


def test_healthcheck_all_flags_in_nanoseconds() -> None:
    check = only(
        "HEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=100ms "
        '--start-interval=2s --retries=3 CMD ["curl", "-f", "http://localhost/"]\n'
    )
    assert isinstance(check, Healthcheck)
    assert check.test == ("CMD", "curl", "-f", "http://localhost/")
    assert check.interval == 90 * SECOND
    assert check.timeout == 1_500_000_000
    assert check.start_period == 100_000_000
    assert check.start_interval == 2 * SECOND
    assert check.retries == 3


def test_healthcheck_defaults_are_zero() -> None:
    check = only("HEALTHCHECK CMD true\n")
    assert isinstance(check, Healthcheck)
    assert (check.interval, check.timeout, check.start_period, check.retries) == (0, 0, 0, 0)


def test_healthcheck_shell_form_is_cmd_shell() -> None:
    check = only("HEALTHCHECK --interval=5m CMD curl -f http://localhost/ || exit 1\n")
    assert isinstance(check, Healthcheck)
    assert check.test == ("CMD-SHELL", "curl -f http://localhost/ || exit 1")
    assert check.interval == 300 * SECOND


def test_healthcheck_type_is_case_insensitive() -> None:
    check = only("HEALTHCHECK cmd true\n")
    assert isinstance(check, Healthcheck)
    assert check.test == ("CMD-SHELL", "true")


def test_healthcheck_none() -> None:
    check = only("HEALTHCHECK NONE\n")
    assert isinstance(check, Healthcheck)
    assert check.test == ("NONE",)


def test_healthcheck_zero_duration_means_default() -> None:
    check = only("HEALTHCHECK --interval=0s --timeout=0 CMD true\n")
    assert isinstance(check, Healthcheck)
    assert (check.interval, check.timeout) == (0, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HEALTHCHECK --interval=5x CMD true\n", "--interval"),
        ("HEALTHCHECK --timeout=30 CMD true\n", "--timeout"),  # a number needs a unit
        ("HEALTHCHECK --interval=50ns CMD true\n", "cannot be less than 1ms"),
        ("HEALTHCHECK --start-period=-1s CMD true\n", "cannot be less than 1ms"),
        ("HEALTHCHECK --retries=-1 CMD true\n", "--retries cannot be negative"),
        ("HEALTHCHECK --retries=x CMD true\n", "--retries"),
        ("HEALTHCHECK CMD\n", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK FOO true\n", "HEALTHCHECK"),
        ("HEALTHCHECK NONE extra\n", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK --bogus=1 CMD true\n", "unknown flag"),
    ],
)
def test_healthcheck_errors(text: str, message: str) -> None:
    err = stage_error(text)
    assert message in str(err)
    assert err.line == 2


# -- FROM ----------------------------------------------------------------------------------------


def test_from_platform_and_stage_name() -> None:
    df = dockerfile("FROM --platform=linux/arm64 golang:1.22 AS Builder\n")
    from_ = df.stages[0].from_
    assert isinstance(from_, From)
    assert (from_.base, from_.platform, from_.stage_name) == (
        "golang:1.22",
        "linux/arm64",
        "builder",
    )
    assert df.stages[0].name == "builder"


def test_from_as_keyword_is_case_insensitive() -> None:
    assert dockerfile("FROM alpine as base\n").stages[0].name == "base"


def test_from_platform_keeps_variables_for_the_plan() -> None:
    from_ = dockerfile("FROM --platform=$BUILDPLATFORM alpine\n").stages[0].from_
    assert from_.platform == "$BUILDPLATFORM"


@pytest.mark.parametrize("name", ["1stage", "stage!", "-dash", "a/b", "a:b", "_x"])
def test_from_invalid_stage_name(name: str) -> None:
    err = error(f"FROM alpine AS {name}\n")
    assert "invalid name for build stage" in str(err)
    assert err.line == 1


@pytest.mark.parametrize("name", ["a", "build-env", "step_2", "v1.2", "x9"])
def test_from_valid_stage_names(name: str) -> None:
    assert dockerfile(f"FROM alpine AS {name}\n").stages[0].name == name


@pytest.mark.parametrize("text", ["FROM\n", "FROM a AS\n", "FROM a b c d\n", "FROM a FOR b\n"])
def test_from_wrong_number_of_arguments(text: str) -> None:
    assert "FROM requires either one or three arguments" in str(error(text))


def test_from_unknown_flag() -> None:
    err = error("FROM --plaform=linux/amd64 alpine\n")
    assert "unknown flag" in str(err)
    assert "platform" in str(err)


# -- RUN flags -----------------------------------------------------------------------------------


def test_run_mounts_are_kept_as_written_until_planned() -> None:
    run = only(
        "RUN --mount=type=cache,target=/root/.cache,sharing=locked "
        "--mount=type=secret,id=token,env=TOKEN --mount=type=ssh pip install .\n"
    )
    assert isinstance(run, Run)
    assert run.mounts == (
        "type=cache,target=/root/.cache,sharing=locked",
        "type=secret,id=token,env=TOKEN",
        "type=ssh",
    )
    assert run.command == ("pip install .",)
    assert run.resolved_mounts == ()


def test_run_mount_types_and_options_after_planning() -> None:
    text = (
        "FROM scratch AS src\nFROM scratch\n"
        "RUN --mount=type=bind,from=src,source=/out,target=/in,rw "
        "--mount=type=cache,id=pip,target=/c,sharing=private,mode=0700,uid=1000,gid=1000 "
        "--mount=type=tmpfs,target=/t,size=64m "
        "--mount=type=secret,id=tok,target=/run/secrets/tok,required=true "
        "--mount=type=ssh,id=default,required true\n"
    )
    run = plan(text).target_stage.steps[0].instruction
    assert isinstance(run, Run)
    bind, cache, tmpfs, secret, ssh = run.resolved_mounts
    assert (bind.type, bind.from_, bind.source, bind.target, bind.readonly) == (
        "bind",
        "src",
        "/out",
        "/in",
        False,
    )
    assert (cache.type, cache.cache_id, cache.sharing, cache.mode, cache.uid, cache.gid) == (
        "cache",
        "pip",
        "private",
        0o700,
        1000,
        1000,
    )
    assert cache.readonly is False
    assert (tmpfs.type, tmpfs.target, tmpfs.size_limit, tmpfs.readonly) == (
        "tmpfs",
        "/t",
        64 * 1024 * 1024,
        False,
    )
    assert (secret.type, secret.cache_id, secret.target, secret.required) == (
        "secret",
        "tok",
        "/run/secrets/tok",
        True,
    )
    assert secret.readonly is True
    assert (ssh.type, ssh.cache_id, ssh.required) == ("ssh", "default", True)


def test_run_mount_defaults_to_a_read_only_bind() -> None:
    run = plan("FROM scratch\nRUN --mount=target=/ctx ls\n").target_stage.steps[0].instruction
    assert isinstance(run, Run)
    (mount,) = run.resolved_mounts
    assert (mount.type, mount.target, mount.readonly) == ("bind", "/ctx", True)


@pytest.mark.parametrize("spec", ["type=bind,from=$STAGE,target=/x", "from=${X},target=/y"])
def test_run_mount_from_cannot_use_variables_at_parse_time(spec: str) -> None:
    err = stage_error(f"RUN --mount={spec} true\n")
    assert err.line == 2
    assert "'from' doesn't support variable expansion, define alias stage instead" in str(err)


def test_run_mount_from_ending_in_a_dollar_is_not_a_variable() -> None:
    run = only("RUN --mount=from=odd$,target=/x true\n")
    assert isinstance(run, Run)
    assert run.mounts == ("from=odd$,target=/x",)


def test_run_mount_unknown_key_is_reported_with_a_suggestion() -> None:
    # Unknown keys are only checked once values can be expanded: at planning time.
    text = "FROM scratch\nRUN --mount=type=bind,targt=/x true\n"
    assert isinstance(dockerfile(text).stages[0].instructions[0], Run)
    with pytest.raises(DockerfileError) as caught:
        plan(text)
    assert caught.value.line == 2
    assert "unexpected key 'targt'" in str(caught.value)
    assert "did you mean target?" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("type=bnd,target=/x", "did you mean bind?"),
        ("type=bind,target=/x,mode=0755", "mode not allowed"),
        ("type=bind,target=/x,required", "unexpected key 'required'"),
        ("type=cache,target=/c,size=1m", "unexpected key 'size'"),
        ("type=cache,target=/c,sharing=sometimes", "unsupported sharing value"),
        ("type=bind,target=/x,sharing=shared", "invalid cache sharing set for bind mount"),
        ("type=secret", "invalid secret mount. one of source, target required"),
        ("type=secret,id=a,from=b", "secret mount should not have a from"),
        ("type=secret,id=a,source=b", "both source and id can't be set"),
        ("type=tmpfs,target=/t,size=lots", "invalid value for size: lots"),
        ("type=cache,target=/c,ro=maybe", "invalid value for ro: maybe"),
        ("type=cache,target=/c,uid=-1", "for uid"),
        ("type=cache,target=/c,mode=9", "for mode"),
        ("type=bind,target", "must be a key=value pair"),
    ],
)
def test_run_mount_errors(spec: str, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        plan(f"FROM scratch\nRUN --mount={spec} true\n")
    assert message in str(caught.value)
    assert caught.value.line == 2


@pytest.mark.parametrize("option", ["uid=1_000", "gid=1_0", "mode=0o755", "mode=0_755"])
def test_run_mount_numbers_are_plain_digits(option: str) -> None:
    with pytest.raises(DockerfileError):
        plan(f"FROM scratch\nRUN --mount=type=cache,target=/c,{option} true\n")


def test_run_mount_sharing_typo_gets_a_suggestion() -> None:
    with pytest.raises(DockerfileError) as caught:
        plan("FROM scratch\nRUN --mount=type=cache,target=/c,sharing=lockd true\n")
    assert "did you mean locked?" in str(caught.value)


@pytest.mark.parametrize(
    ("flag", "network"), [("", "default"), ("--network=none ", "none"), ("--network=host ", "host")]
)
def test_run_network(flag: str, network: str) -> None:
    run = only(f"RUN {flag}true\n")
    assert isinstance(run, Run)
    assert run.network == network


def test_run_security() -> None:
    sandbox, insecure = body("FROM scratch\nRUN true\nRUN --security=insecure true\n")
    assert isinstance(sandbox, Run)
    assert isinstance(insecure, Run)
    assert (sandbox.security, insecure.security) == ("sandbox", "insecure")


@pytest.mark.parametrize("text", ["RUN --network=bridge true\n", "RUN --security=root true\n"])
def test_run_invalid_network_or_security(text: str) -> None:
    assert stage_error(text).line == 2


# -- COPY and ADD --------------------------------------------------------------------------------


def test_copy_all_flags() -> None:
    copy = only(
        "COPY --from=build --chown=1000:1000 --chmod=0755 --link --exclude=*.md "
        "--exclude=tests/ --parents a/./b c /dest/\n"
    )
    assert isinstance(copy, Copy)
    assert copy.sources == ("a/./b", "c")
    assert copy.dest == "/dest/"
    assert (copy.from_, copy.chown, copy.chmod) == ("build", "1000:1000", "0755")
    assert (copy.link, copy.parents) == (True, True)
    assert copy.excludes == ("*.md", "tests/")


def test_copy_defaults() -> None:
    copy = only("COPY a b\n")
    assert isinstance(copy, Copy)
    assert (copy.from_, copy.chown, copy.chmod, copy.link, copy.parents, copy.excludes) == (
        "",
        "",
        "",
        False,
        False,
        (),
    )


def test_copy_json_form() -> None:
    copy = only('COPY ["a file", "another", "/dest dir/"]\n')
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest) == (("a file", "another"), "/dest dir/")


def test_add_all_flags() -> None:
    add = only(
        "ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d"
        " --keep-git-dir=true --unpack=false --chown=app --chmod=644 --link --exclude=*.tmp"
        " https://example.com/a.tar.gz /opt/\n"
    )
    assert isinstance(add, Add)
    assert add.checksum.startswith("sha256:24454f83")
    assert (add.keep_git_dir, add.unpack, add.chown, add.chmod, add.link) == (
        True,
        False,
        "app",
        "644",
        True,
    )
    assert add.excludes == ("*.tmp",)
    assert (add.sources, add.dest) == (("https://example.com/a.tar.gz",), "/opt/")


def test_add_optional_booleans_are_none_when_not_written() -> None:
    add = only("ADD --unpack a.tar /x/\n")
    assert isinstance(add, Add)
    assert (add.keep_git_dir, add.unpack) == (None, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("COPY --parents=maybe a b\n", "--parents"),
        ("COPY --link= a b\n", "--link"),
        ("COPY --from a b\n", "--from"),
        ("COPY --from=a --from=b x y\n", "duplicate flag"),
        ("COPY --checksum=sha256:00 a b\n", "unknown flag"),  # ADD only
        ("ADD --from=x a b\n", "unknown flag"),  # COPY only
        ("ADD --parents a b\n", "unknown flag"),
    ],
)
def test_copy_add_flag_errors(text: str, message: str) -> None:
    err = stage_error(text)
    assert message in str(err)
    assert err.line == 2


@pytest.mark.parametrize("keyword", ["COPY", "ADD"])
def test_copy_add_need_a_destination(keyword: str) -> None:
    err = stage_error(f"{keyword} onlyone\n")
    assert f"{keyword} requires at least two arguments" in str(err)


def test_flag_values_may_be_quoted() -> None:
    run = only('RUN --mount="type=bind,target=/with space" true\n')
    assert isinstance(run, Run)
    assert (run.mounts, run.command) == (("type=bind,target=/with space",), ("true",))
    copy = only("COPY --chown='app user' a b\n")
    assert isinstance(copy, Copy)
    assert copy.chown == "app user"


def test_unknown_flag_suggests_the_closest() -> None:
    err = stage_error("RUN --mont=type=cache,target=/c true\n")
    assert "unknown flag" in str(err)
    assert "mont" in str(err)
    assert "did you mean --mount?" in str(err)


@pytest.mark.parametrize("keyword", ["ENV A=1", "WORKDIR /", "USER x", "EXPOSE 80", "CMD x"])
def test_instructions_without_flags_reject_any(keyword: str) -> None:
    name, rest = keyword.split(" ", 1)
    err = stage_error(f"{name} --boo {rest}\n")
    assert "unknown flag" in str(err)
    assert "boo" in str(err)


# -- unknown instructions ------------------------------------------------------------------------


def test_unknown_instruction_exact_message_with_file_name() -> None:
    err = error("FROM scratch\n\nRUNN make\n", file="Dockerfile")
    assert str(err) == 'Dockerfile:3: unknown instruction "RUNN" (did you mean RUN?)'
    err = error("FROM scratch\ncopyy a b\n", file="docker/Dockerfile.dev")
    assert str(err) == 'docker/Dockerfile.dev:2: unknown instruction "COPYY" (did you mean COPY?)'


def test_unknown_instruction_without_a_close_match() -> None:
    assert str(error("FROM scratch\nFOO bar\n")) == 'Dockerfile:2: unknown instruction "FOO"'


def test_unknown_instruction_before_from() -> None:
    assert str(error("FORM alpine\n")).startswith('Dockerfile:1: unknown instruction "FORM"')


# -- ONBUILD -------------------------------------------------------------------------------------


def test_onbuild_trigger_is_a_parsed_instruction() -> None:
    onbuild_run, onbuild_copy = body(
        "FROM scratch\nONBUILD RUN echo hi\nonbuild COPY --from=deps --chown=app a /b\n"
    )
    assert isinstance(onbuild_run, Onbuild)
    assert onbuild_run.expression == "RUN echo hi"
    assert isinstance(onbuild_run.trigger, Run)
    assert onbuild_run.trigger.command == ("echo hi",)
    assert isinstance(onbuild_copy, Onbuild)
    assert isinstance(onbuild_copy.trigger, Copy)
    assert (onbuild_copy.trigger.from_, onbuild_copy.trigger.chown) == ("deps", "app")
    assert onbuild_copy.trigger.location.start_line == 3


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ("ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("FROM alpine", "FROM isn't allowed as an ONBUILD trigger"),
        ("MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ],
)
def test_onbuild_forbidden_triggers(trigger: str, message: str) -> None:
    err = stage_error(f"ONBUILD {trigger}\n")
    assert message in str(err)
    assert err.line == 2


@pytest.mark.parametrize("trigger", ["RUNN true", "RUN --bogus true", "COPY onlyone"])
def test_invalid_trigger_does_not_fail_the_image_that_declares_it(trigger: str) -> None:
    (onbuild,) = body(f"FROM scratch\nONBUILD {trigger}\n")
    assert isinstance(onbuild, Onbuild)
    assert onbuild.expression == trigger


# -- file structure ----------------------------------------------------------------------------


def test_instruction_before_first_from_is_an_error() -> None:
    err = error("ARG V=1\nRUN echo\nFROM alpine\n")
    assert err.line == 2
    assert str(err).startswith("Dockerfile:2: ")
    assert "FROM" in str(err)


def test_only_args_may_precede_from() -> None:
    df = dockerfile("ARG A=1\nARG B\nFROM alpine\nARG C\n")
    assert [d.key for arg in df.meta_args for d in arg.args] == ["A", "B"]
    assert len(df.stages) == 1
    assert isinstance(df.stages[0].instructions[0], Arg)


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n", "   \n# a\n\n"])
def test_empty_file_is_an_error(text: str) -> None:
    err = error(text, file="Empty.Dockerfile")
    assert str(err).startswith("Empty.Dockerfile")
    assert "no instructions" in str(err)


def test_file_with_only_args_has_no_stages() -> None:
    assert "no stages" in str(error("ARG A=1\n"))


def test_stages_split_at_each_from() -> None:
    df = dockerfile("FROM a AS one\nRUN x\nRUN y\nFROM b\nFROM c AS three\nUSER u\n")
    assert [(s.index, s.name, s.display_name, len(s.instructions)) for s in df.stages] == [
        (0, "one", "one", 2),
        (1, "", "stage-1", 0),
        (2, "three", "three", 1),
    ]
    assert all(isinstance(s, Stage) for s in df.stages)


def test_stage_lookup_by_name_and_index() -> None:
    df = dockerfile("FROM a AS Build\nFROM b AS build\nFROM c\n")
    found = df.stage("BUILD")
    assert found is not None
    assert found.index == 1  # a repeated name means the last one
    by_index = df.stage("2")
    assert by_index is not None
    assert by_index.index == 2
    assert df.stage("3") is None
    assert df.stage("missing") is None


# -- comments that describe ----------------------------------------------------------------------


def test_comment_right_before_from_describes_the_stage() -> None:
    df = dockerfile(
        "# builder compiles the application\nFROM golang AS builder\n"
        "# runtime\n#\n# unrelated words\nFROM alpine AS runtime\n"
        "FROM alpine AS plain\n"
    )
    assert [s.from_.comment for s in df.stages] == ["compiles the application", "", ""]


def test_blank_line_between_comment_and_from_keeps_the_description() -> None:
    df = dockerfile("# base the shared base\n\nFROM alpine AS base\n")
    assert df.stages[0].from_.comment == "the shared base"


def test_comment_names_the_arg_it_describes() -> None:
    df = dockerfile("# VERSION the release to build\nARG VERSION=1.0 OTHER\nFROM scratch\n")
    assert df.meta_args[0].args == (
        ArgDefinition("VERSION", "1.0", "the release to build"),
        ArgDefinition("OTHER", None, ""),
    )


def test_directive_is_not_a_stage_description() -> None:
    # Were the directive kept as a comment, "syntax = ..." would describe the stage "syntax".
    df = dockerfile("# syntax = docker/dockerfile:1\nFROM alpine AS syntax\n")
    assert df.directives.syntax is not None
    assert df.stages[0].from_.comment == ""
