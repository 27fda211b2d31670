"""Variable expansion: the shell lexer itself, and which instruction fields the plan expands."""

from __future__ import annotations

import pytest

from kiln.dockerfile.instructions import (
    Add,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Label,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from kiln.dockerfile.shell import ShellError, ShellLex
from kiln.errors import DockerfileError
from tests.dockerfile.support import body, expanded, plan, warnings

ENV = {"SET": "value", "EMPTY": "", "PATHLIKE": "/usr/local/lib/app.tar.gz", "WORDS": "a  b c"}
LEX = ShellLex()
BACKTICK = ShellLex("`")


def word(text: str, env: dict[str, str] | None = None, lex: ShellLex = LEX) -> str:
    return lex.process_word(text, ENV if env is None else env)


def words(text: str, env: dict[str, str] | None = None, lex: ShellLex = LEX) -> list[str]:
    return lex.process_words(text, ENV if env is None else env)


# -- ${VAR...} operators -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # ${V:-w}: w if unset or empty; ${V-w}: w only if unset
        ("${SET:-w}", "value"),
        ("${EMPTY:-w}", "w"),
        ("${UNSET:-w}", "w"),
        ("${SET-w}", "value"),
        ("${EMPTY-w}", ""),
        ("${UNSET-w}", "w"),
        # ${V:+w}: w if set and non-empty; ${V+w}: w if set at all
        ("${SET:+w}", "w"),
        ("${EMPTY:+w}", ""),
        ("${UNSET:+w}", ""),
        ("${SET+w}", "w"),
        ("${EMPTY+w}", "w"),
        ("${UNSET+w}", ""),
        # ${V?m} and ${V:?m} pass values through when they are allowed
        ("${SET:?must be set}", "value"),
        ("${SET?must be set}", "value"),
        ("${EMPTY?only unset fails}", ""),
        # prefix and suffix removal, shortest and longest
        ("${PATHLIKE#*/}", "usr/local/lib/app.tar.gz"),
        ("${PATHLIKE##*/}", "app.tar.gz"),
        ("${PATHLIKE%.*}", "/usr/local/lib/app.tar"),
        ("${PATHLIKE%%.*}", "/usr/local/lib/app"),
        ("${PATHLIKE#nomatch}", "/usr/local/lib/app.tar.gz"),
        ("${PATHLIKE%?z}", "/usr/local/lib/app.tar."),
        ("${UNSET#x}", ""),
        # replacement, first and all
        ("${PATHLIKE/l/L}", "/usr/Local/lib/app.tar.gz"),
        ("${PATHLIKE//l/L}", "/usr/LocaL/Lib/app.tar.gz"),
        ("${PATHLIKE//a*/}", "/usr/loc"),
        ("${SET/nomatch/x}", "value"),
        ("${UNSET//a/b}", ""),
        # the word of an operator is itself expanded
        ("${UNSET:-$SET}", "value"),
        ("${UNSET:-${EMPTY:-deep}}", "deep"),
        ("${SET:+[$SET]}", "[value]"),
        ("${UNSET:-'quoted $SET'}", "quoted $SET"),
        ("${UNSET:-a b}", "a b"),
    ],
)
def test_parameter_operators(source: str, expected: str) -> None:
    assert word(source) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("${UNSET:?custom message}", "custom message"),
        ("${EMPTY:?custom message}", "custom message"),
        ("${UNSET?}", "UNSET"),
        ("${UNSET:?}", "UNSET"),
        ("${EMPTY:?}", "EMPTY"),
    ],
)
def test_required_variable_errors(source: str, fragment: str) -> None:
    with pytest.raises(ShellError) as caught:
        word(source)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "${",  # missing }
        "${SET",
        "${SET:-unterminated",
        "${}",  # bad substitution
        "${:-x}",
        "${{SET}",
        "${SET!x}",  # unsupported modifier
        "${SET:#x}",
        "${SET:%x}",
        "${SET/x",  # missing / in ${}
        "'unterminated single",
        '"unterminated double',
        "a'b",
        'prefix"$SET',
    ],
)
def test_syntax_errors(source: str) -> None:
    with pytest.raises(ShellError) as caught:
        word(source)
    assert "failed to process" in str(caught.value)


def test_error_message_names_the_word() -> None:
    with pytest.raises(ShellError) as caught:
        word("abc${")
    assert '"abc${"' in str(caught.value)


# -- quoting and escapes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'$SET'", "$SET"),  # single quotes: everything literal
        ("'a\\b'", "a\\b"),
        ('"$SET"', "value"),  # double quotes: variables expand
        ('"${SET}s"', "values"),
        ("\\$SET", "$SET"),  # escaped dollar
        ("$SET\\$SET", "value$SET"),
        ('"a\\"b"', 'a"b'),  # in double quotes \ escapes " $ and itself...
        ('"a\\$SET"', "a$SET"),
        ('"a\\\\b"', "a\\b"),
        ('"a\\b"', "a\\b"),  # ...and nothing else
        ("a\\b", "ab"),  # outside quotes it escapes anything
        ("a\\ b", "a b"),
        ("x'y'\"z\"", "xyz"),
        ("$SET.txt", "value.txt"),
        ("$SET_x", ""),  # the name runs on through _ and letters
        ("${SET}_x", "value_x"),
        ("$UNSET", ""),
        ("$", "$"),
        ("a$", "a$"),
        ("$1", ""),
        ("100$", "100$"),
        ("trailing\\", "trailing"),
    ],
)
def test_quotes_and_backslash(source: str, expected: str) -> None:
    assert word(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("`$SET", "$SET"),
        ("a` b", "a b"),
        ('"a`"b"', 'a"b'),
        ('"a`$SET"', "a$SET"),
        ("C:\\dir\\$SET", "C:\\dir\\value"),  # backslash is an ordinary character
        ('"C:\\dir"', "C:\\dir"),
        ("'`$SET'", "`$SET"),
    ],
)
def test_backtick_escape(source: str, expected: str) -> None:
    assert word(source, lex=BACKTICK) == expected


# -- word splitting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("one two\tthree", ["one", "two", "three"]),
        ("  padded  ", ["padded"]),
        ("$WORDS", ["a", "b", "c"]),  # unquoted values split on blanks
        ('"$WORDS"', ["a  b c"]),  # quoted values do not
        ("x$WORDS", ["xa", "b", "c"]),
        ("'a b' \"c d\" e\\ f", ["a b", "c d", "e f"]),
        ("$EMPTY", []),
        ('a ""', ["a"]),
        ('"$EMPTY"', []),
        ("a$EMPTY b", ["a", "b"]),
        ("${UNSET:-x y}", ["x", "y"]),
        ("", []),
    ],
)
def test_process_words(source: str, expected: list[str]) -> None:
    assert words(source) == expected


def test_process_words_with_backtick_escape() -> None:
    assert words('a` b c`"d`"', lex=BACKTICK) == ["a b", 'c"d"']


@pytest.mark.parametrize(
    ("source", "expected"),
    [('"" a', ["a"]), ("'' a b", ["a", "b"]), ('a "" b', ["a", "b"]), ('"$EMPTY" x', ["x"])],
)
def test_empty_quotes_before_a_blank_make_no_word(source: str, expected: list[str]) -> None:
    assert words(source) == expected


def test_process_word_keeps_inner_spacing() -> None:
    assert word("  a  $WORDS  ") == "  a  a  b c  "


def test_expand_reports_matched_and_unmatched_names() -> None:
    expansion = LEX.expand("$SET ${UNSET:-x} ${EMPTY} $OTHER '$QUOTED'", ENV)
    assert expansion.matched == {"SET", "EMPTY"}
    assert expansion.unmatched == {"UNSET", "OTHER"}


def test_skip_unset_env_keeps_unknown_references() -> None:
    lex = ShellLex(skip_unset_env=True)
    assert lex.process_word("$SET $UNSET ${UNSET} ${UNSET:-d}", ENV) == (
        "value $UNSET ${UNSET} ${UNSET:-d}"
    )


def test_raw_quotes_keeps_quote_characters() -> None:
    assert ShellLex(raw_quotes=True).process_word("'a' \"$SET\"", ENV) == "'a' \"value\""


def test_skip_process_quotes_treats_quotes_as_text() -> None:
    lex = ShellLex(skip_process_quotes=True)
    assert lex.process_word("'$SET' \"$SET\"", ENV) == "'value' \"value\""


# -- what the plan expands -----------------------------------------------------------------------

_SCOPE = (
    "FROM scratch AS src\n"
    "FROM scratch\n"
    'ENV DIR=/data USER_NAME=app PORTS="80 443" SIG=SIGQUIT MODE=0755 STAGE=src KEY=k\n'
)


def _last(text: str) -> object:
    return expanded(_SCOPE + text)[-1]


def test_env_keys_and_values_are_expanded() -> None:
    env = _last('ENV ${KEY}_2=$DIR/x "QUOTED"="$USER_NAME home" LEGACY_$KEY=1\n')
    assert isinstance(env, Env)
    assert [(p.key, p.value) for p in env.pairs] == [
        ("k_2", "/data/x"),
        ("QUOTED", "app home"),
        ("LEGACY_k", "1"),
    ]


def test_legacy_env_value_is_expanded_whole() -> None:
    env = _last("ENV GREETING hello $USER_NAME, 'quoted'\n")
    assert isinstance(env, Env)
    assert [(p.key, p.value) for p in env.pairs] == [("GREETING", "hello app, quoted")]


def test_env_pairs_see_values_from_before_the_instruction() -> None:
    steps = expanded("FROM scratch\nENV A=old\nENV A=new B=$A C=${A}-c\n")
    env = steps[-1]
    assert isinstance(env, Env)
    assert [(p.key, p.value) for p in env.pairs] == [("A", "new"), ("B", "old"), ("C", "old-c")]


def test_env_pair_using_a_variable_defined_in_the_same_instruction_is_empty() -> None:
    env = expanded("FROM scratch\nENV FIRST=1 SECOND=$FIRST\n")[-1]
    assert isinstance(env, Env)
    assert [(p.key, p.value) for p in env.pairs] == [("FIRST", "1"), ("SECOND", "")]


def test_label_keys_and_values_are_expanded() -> None:
    label = _last('LABEL "org.$KEY"="$DIR" plain=${USER_NAME}\n')
    assert isinstance(label, Label)
    assert [(p.key, p.value) for p in label.pairs] == [("org.k", "/data"), ("plain", "app")]


def test_copy_sources_destination_chown_and_chmod_are_expanded() -> None:
    copy = _last("COPY --chown=$USER_NAME:$USER_NAME --chmod=$MODE $DIR/a ${DIR}/b/ $DIR/dest/\n")
    assert isinstance(copy, Copy)
    assert copy.sources == ("/data/a", "/data/b/")
    assert copy.dest == "/data/dest/"
    assert (copy.chown, copy.chmod) == ("app:app", "0755")


def test_copy_json_form_is_expanded_too() -> None:
    copy = _last('COPY ["$DIR/a b", "/$USER_NAME/"]\n')
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest) == (("/data/a b",), "/app/")


def test_copy_from_is_not_expanded() -> None:
    result = plan(_SCOPE + "COPY --from=$STAGE /x /x\n")
    copy = result.target_stage.steps[-1].instruction
    assert isinstance(copy, Copy)
    assert copy.from_ == "$STAGE"
    # ... so it does not name the stage "src", which is therefore not a dependency.
    assert result.target_stage.dependencies == ()
    assert [s.stage.index for s in result.stages] == [1]


def test_add_sources_chown_and_checksum_are_expanded() -> None:
    add = _last("ADD --chown=$USER_NAME --checksum=sha256:$KEY https://x/$KEY.tgz $DIR/\n")
    assert isinstance(add, Add)
    assert (add.chown, add.checksum) == ("app", "sha256:k")
    assert (add.sources, add.dest) == (("https://x/k.tgz",), "/data/")


def test_workdir_user_stopsignal_are_expanded() -> None:
    steps = expanded(_SCOPE + "WORKDIR $DIR/work\nUSER ${USER_NAME}:staff\nSTOPSIGNAL $SIG\n")
    workdir, user, signal = steps[-3:]
    assert isinstance(workdir, Workdir)
    assert isinstance(user, User)
    assert isinstance(signal, StopSignal)
    assert (workdir.path, user.user, signal.signal) == ("/data/work", "app:staff", "SIGQUIT")


def test_volume_entries_are_expanded() -> None:
    steps = expanded(_SCOPE + 'VOLUME $DIR/a /b\nVOLUME ["$DIR/c", "/${KEY}"]\n')
    listed, json_form = steps[-2:]
    assert isinstance(listed, Volume)
    assert isinstance(json_form, Volume)
    assert listed.volumes == ("/data/a", "/b")
    assert json_form.volumes == ("/data/c", "/k")


def test_expose_words_are_expanded_and_split() -> None:
    expose = _last("EXPOSE $PORTS 8080/udp\n")
    assert isinstance(expose, Expose)
    assert expose.ports == ("80", "443", "8080/udp")


def test_run_mount_values_are_expanded() -> None:
    run = _last("RUN --mount=type=cache,id=$KEY,target=$DIR/cache,mode=$MODE make\n")
    assert isinstance(run, Run)
    (mount,) = run.resolved_mounts
    assert (mount.cache_id, mount.target, mount.mode) == ("k", "/data/cache", 0o755)
    assert run.mounts == ("type=cache,id=$KEY,target=$DIR/cache,mode=$MODE",)


def test_run_mount_type_may_come_from_a_variable() -> None:
    run = expanded("FROM scratch\nARG KIND=tmpfs\nRUN --mount=type=$KIND,target=/t true\n")[-1]
    assert isinstance(run, Run)
    assert run.resolved_mounts[0].type == "tmpfs"


@pytest.mark.parametrize(
    ("text", "cls", "field", "value"),
    [
        ("RUN echo $DIR '$KEY'\n", Run, "command", ("echo $DIR '$KEY'",)),
        ('RUN ["echo", "$DIR"]\n', Run, "command", ("echo", "$DIR")),
        ("CMD echo $DIR\n", Cmd, "command", ("echo $DIR",)),
        ('ENTRYPOINT ["/bin/$USER_NAME"]\n', Entrypoint, "command", ("/bin/$USER_NAME",)),
        ("HEALTHCHECK CMD curl $DIR\n", Healthcheck, "test", ("CMD-SHELL", "curl $DIR")),
        ('SHELL ["/bin/$USER_NAME", "-c"]\n', Shell, "shell", ("/bin/$USER_NAME", "-c")),
        ("ONBUILD RUN echo $DIR\n", Onbuild, "expression", "RUN echo $DIR"),
    ],
)
def test_commands_are_left_for_the_shell(text: str, cls: type, field: str, value: object) -> None:
    instruction = _last(text)
    assert isinstance(instruction, cls)
    assert getattr(instruction, field) == value


def test_nothing_is_expanded_at_parse_time() -> None:
    copy, workdir = body("FROM scratch\nENV D=/d\nCOPY $D/a $D/\nWORKDIR $D\n")[1:]
    assert isinstance(copy, Copy)
    assert isinstance(workdir, Workdir)
    assert (copy.sources, copy.dest, workdir.path) == (("$D/a",), "$D/", "$D")


def test_expansion_uses_the_escape_directive() -> None:
    workdir = expanded("# escape=`\nFROM scratch\nENV D=x\nWORKDIR C:\\`$D\\$D\n")[-1]
    assert isinstance(workdir, Workdir)
    assert workdir.path == "C:\\$D\\x"


def test_expansion_error_names_the_instruction_line() -> None:
    with pytest.raises(DockerfileError) as caught:
        plan("FROM scratch\nENV A=1\nWORKDIR ${A\n")
    assert caught.value.line == 3
    assert "failed to process" in str(caught.value)


def test_unterminated_quote_in_env_is_reported_when_planned() -> None:
    with pytest.raises(DockerfileError) as caught:
        plan('FROM scratch\nENV A="open\n')
    assert caught.value.line == 2
    assert "double-quote" in str(caught.value)


def test_required_variable_error_through_the_plan() -> None:
    with pytest.raises(DockerfileError) as caught:
        plan("FROM scratch\nUSER ${NAME:?set NAME first}\n")
    assert "set NAME first" in str(caught.value)


def test_undefined_variable_in_an_expanded_field_warns() -> None:
    messages = warnings("FROM scratch\nWORKDIR /$NOPE\n")
    assert any("undefined variable '$NOPE'" in m for m in messages)


def test_variables_only_in_commands_do_not_warn() -> None:
    assert warnings("FROM scratch\nRUN echo $NOPE\nCMD $NOPE\n") == []
