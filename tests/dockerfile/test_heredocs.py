"""Heredocs (``RUN <<EOF``, ``COPY <<EOF /dest``): detection, bodies, typing and expansion.

The expectations follow BuildKit's parser and instruction heredoc tests and the Dockerfile
reference; the cases are written afresh for kiln.
"""

from __future__ import annotations

import pytest

from kiln.dockerfile.heredoc import Heredoc, heredocs_in_line, parse_heredoc
from kiln.dockerfile.instructions import Add, Copy, InlineFile, Onbuild, Run
from kiln.dockerfile.parser import parse
from kiln.dockerfile.shell import ShellError
from kiln.errors import DockerfileError
from tests.dockerfile.support import body, expanded, only


def docs(text: str) -> list[tuple[str, str]]:
    """(name, content) of every heredoc of the one instruction after ``FROM scratch``."""
    node = parse("FROM scratch\n" + text).nodes[1]
    return [(doc.name, doc.content) for doc in node.heredocs]


def heredoc(text: str) -> Heredoc:
    (doc,) = parse("FROM scratch\n" + text).nodes[1].heredocs
    return doc


# -- finding heredocs and reading their bodies --------------------------------------------------


def test_two_heredocs_on_one_line_read_their_bodies_in_order() -> None:
    text = "COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n"
    assert docs(text) == [("FILE1", "content 1\n"), ("FILE2", "content 2\n")]


def test_only_the_current_heredoc_name_terminates_its_body() -> None:
    # X's body is read first, so the first line "Y" belongs to X, and so on.
    assert docs("COPY <<X <<Y /dest\nY\nX\nX\nY\n") == [("X", "Y\n"), ("Y", "X\n")]


def test_three_heredocs_and_a_plain_source() -> None:
    text = "COPY <<A plain.txt <<B <<C /dest/\na\nA\nb\nB\nc\nC\n"
    copy = only(text)
    assert isinstance(copy, Copy)
    assert copy.sources == ("plain.txt",)
    assert [(f.name, f.data) for f in copy.inline] == [("A", "a\n"), ("B", "b\n"), ("C", "c\n")]


def test_dash_keeps_the_raw_body_and_strips_tabs_on_use() -> None:
    doc = heredoc("RUN <<-UNINDENT\n\tbaz\n\tquux\nUNINDENT\n")
    assert (doc.name, doc.chomp, doc.expand) == ("UNINDENT", True, True)
    assert doc.content == "\tbaz\n\tquux\n"
    assert doc.body == "baz\nquux\n"


def test_dash_lets_the_terminator_be_indented_with_tabs() -> None:
    doc = heredoc("RUN <<-END\n\tbaz\n\t\tEND\n")
    assert doc.content == "\tbaz\n"


def test_dash_strips_only_tabs_not_spaces() -> None:
    doc = heredoc("RUN <<-END\n\t  two spaces\n  \tEND\nEND\n")
    # "  \tEND" is not a terminator: leading spaces are not stripped.
    assert doc.content == "\t  two spaces\n  \tEND\n"
    assert doc.body == "  two spaces\n  \tEND\n"


def test_without_dash_an_indented_terminator_is_body_text() -> None:
    doc = heredoc("RUN <<INDENT\n\tfoo\n\tINDENT\n  INDENT\nINDENT\n")
    assert (doc.chomp, doc.content) == (False, "\tfoo\n\tINDENT\n  INDENT\n")
    assert doc.body == doc.content


@pytest.mark.parametrize(
    ("word", "name", "expand"),
    [
        ("<<EOF", "EOF", True),
        ("<<'EOF'", "EOF", False),
        ('<<"EOF"', "EOF", False),
        ("<<-'EOF'", "EOF", False),
        ("<<eo'f'", "eof", False),  # quoting part of the name is enough
        ("<<eo\\'f", "eo'f", True),  # an escaped quote is not quoting
        ("<<'e'o\\'f", "eo'f", False),
        ("<<'one two'", "one two", False),
        ("<<$EOF", "$EOF", True),  # variables are never expanded in the name
        ("<<file.txt", "file.txt", True),
    ],
)
def test_delimiter_name_and_whether_the_body_expands(word: str, name: str, expand: bool) -> None:
    doc = heredoc(f"RUN {word}\nbody\n{name}\n")
    assert (doc.name, doc.expand, doc.content) == (name, expand, "body\n")


def test_file_descriptor_prefix() -> None:
    doc = heredoc("RUN 3<<EMPTY2\nEMPTY2\n")
    assert (doc.name, doc.file_descriptor, doc.content) == ("EMPTY2", 3, "")


@pytest.mark.parametrize(
    "text",
    [
        'RUN "<<NOHEREDOC"\n',  # quoted: an argument, not a heredoc
        "RUN '<<NOHEREDOC'\n",
        'RUN ["<<EOF"]\n',  # JSON form never has heredocs
        'COPY ["<<EOF", "/dest"]\n',
        "RUN echo a<<b\n",  # << inside a word
    ],
)
def test_not_a_heredoc(text: str) -> None:
    nodes = parse("FROM scratch\n" + text).nodes
    assert len(nodes) == 2
    assert nodes[1].heredocs == []


@pytest.mark.parametrize("keyword", ["USER", "WORKDIR", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME"])
def test_only_run_copy_and_add_take_heredocs(keyword: str) -> None:
    nodes = parse(f"FROM scratch\n{keyword} <<EOF\nEOF\n").nodes
    # The would-be terminator is read as an instruction of its own.
    assert [n.keyword for n in nodes] == ["FROM", keyword, "EOF"]
    assert nodes[1].heredocs == []


def test_a_line_that_cannot_be_lexed_has_no_heredocs() -> None:
    # The unbalanced quote makes the line unlexable; BuildKit then finds no heredoc.
    nodes = parse("FROM scratch\nRUN echo \"it's <<EOF\nRUN true\n").nodes
    assert [n.original for n in nodes[1:]] == ["RUN echo \"it's <<EOF", "RUN true"]
    assert nodes[1].heredocs == []


def test_body_lines_are_never_comments_or_continuations() -> None:
    text = "RUN <<COMMENT\n# internal comment\necho foo bar # trailing\necho a \\\nb\nCOMMENT\n"
    assert docs(text) == [
        ("COMMENT", "# internal comment\necho foo bar # trailing\necho a \\\nb\n"),
    ]


def test_an_escaped_newline_in_the_body_does_not_swallow_the_terminator() -> None:
    nodes = parse("FROM scratch\nRUN <<EOF\necho foo \\\nEOF\nRUN next\n").nodes
    assert nodes[1].heredocs[0].content == "echo foo \\\n"
    assert [n.original for n in nodes[1:]] == ["RUN <<EOF", "RUN next"]


def test_the_heredoc_line_itself_may_be_continued() -> None:
    nodes = parse("FROM scratch\nRUN cat <<EOF \\\n  > /file\nhello\nEOF\n").nodes
    run = nodes[1]
    assert run.args == ["cat <<EOF   > /file"]
    assert [(d.name, d.content) for d in run.heredocs] == [("EOF", "hello\n")]
    assert (run.start_line, run.end_line) == (2, 5)


def test_empty_heredoc() -> None:
    assert docs("RUN <<EMPTY\nEMPTY\n") == [("EMPTY", "")]


def test_heredoc_of_one_blank_line() -> None:
    assert docs("COPY <<EOF /x\n\nEOF\n") == [("EOF", "\n")]


def test_heredoc_under_onbuild_is_read() -> None:
    node = parse("FROM scratch\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN after\n").nodes[1]
    assert [(d.name, d.content) for d in node.heredocs] == [("EOF", "echo hi\n")]
    (onbuild,) = body("FROM scratch\nONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert isinstance(onbuild, Onbuild)
    assert isinstance(onbuild.trigger, Run)
    assert onbuild.trigger.heredocs == (InlineFile("EOF", "echo hi\n"),)


def test_crlf_body_keeps_its_line_endings_and_terminator_matches() -> None:
    nodes = parse("FROM scratch\r\nCOPY <<EOF /x\r\nline\r\nEOF\r\nRUN after\r\n").nodes
    assert nodes[1].heredocs[0].content == "line\r\n"
    assert [n.original for n in nodes] == ["FROM scratch", "COPY <<EOF /x", "RUN after"]


def test_heredoc_lines_count_in_the_instruction_range() -> None:
    nodes = parse("FROM scratch\n\nCOPY <<A <<B /d\na\nA\nb\nb\nB\nRUN x\n").nodes
    assert [(n.start_line, n.end_line) for n in nodes] == [(1, 1), (3, 8), (9, 9)]


# -- unterminated heredocs ----------------------------------------------------------------------


def test_unterminated_heredoc_names_the_instruction_start_line() -> None:
    with pytest.raises(DockerfileError) as caught:
        parse("FROM scratch\n\nRUN <<EOF\necho never closed\nmore\n", file="ci/Dockerfile")
    err = caught.value
    assert err.line == 3
    assert err.end_line == 5
    assert str(err).startswith("ci/Dockerfile:3: ")
    assert "unterminated heredoc" in str(err)


def test_second_unterminated_heredoc_still_points_at_the_start_line() -> None:
    with pytest.raises(DockerfileError) as caught:
        parse("FROM scratch\nCOPY <<ONE <<TWO /d\n1\nONE\n2\n")
    assert caught.value.line == 2
    assert "TWO" in str(caught.value)


def test_terminator_must_match_exactly() -> None:
    # "EOF " (trailing space) and "eof" do not close <<EOF.
    with pytest.raises(DockerfileError):
        parse("FROM scratch\nRUN <<EOF\nEOF \neof\n")


def test_unterminated_heredoc_through_parse_dockerfile() -> None:
    with pytest.raises(DockerfileError) as caught:
        body("FROM scratch\nRUN <<EOF\nx\n")
    assert str(caught.value).startswith("Dockerfile:2: ")


# -- the heredoc word helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "word", ["<<EOF", "<<'EOF'", '<<"EOF"', "<<-EOF", "<<-'EOF'", '<<-"EOF"', '<<EO"F"', "<< EOF"]
)
def test_parse_heredoc_accepts(word: str) -> None:
    doc = parse_heredoc(word)
    assert doc is not None
    assert doc.name == "EOF"


@pytest.mark.parametrize("word", ["<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'])
def test_parse_heredoc_rejects_unbalanced_quotes(word: str) -> None:
    with pytest.raises(ShellError):
        parse_heredoc(word)


@pytest.mark.parametrize("word", ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"])
def test_parse_heredoc_ignores_non_heredocs(word: str) -> None:
    assert parse_heredoc(word) is None


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("RUN <<EOF", ["EOF"]),
        ("RUN <<-EOF", ["EOF"]),
        ("RUN <<'EOF'", ["EOF"]),
        ("RUN 4<<EOF", ["EOF"]),
        ("RUN <<EOF <<EOF2", ["EOF", "EOF2"]),
        ("RUN '<<EOF'", []),
        ('RUN "<<EOF"', []),
    ],
)
def test_heredocs_in_line(line: str, names: list[str]) -> None:
    assert [doc.name for doc in heredocs_in_line(line)] == names


# BuildKit's lexer keeps the blanks after "<<" with the word that follows, so a delimiter may
# be written apart from its "<<" (parser_heredoc_test.go: "RUN <<  EOF" -> "EOF",
# TestHeredocsFromLine: "RUN <<- EOF" -> "EOF", "RUN << -EOF" -> "-EOF"). kiln splits the
# line into "<<" and "EOF", finds no heredoc, and reads the body lines as instructions.


@pytest.mark.parametrize(
    ("line", "names"),
    [("RUN <<  EOF", ["EOF"]), ("RUN <<- EOF", ["EOF"]), ("RUN << -EOF", ["-EOF"])],
)
def test_heredocs_in_line_with_space_after_the_arrows(line: str, names: list[str]) -> None:
    assert [doc.name for doc in heredocs_in_line(line)] == names


def test_space_between_arrows_and_delimiter_still_opens_a_heredoc() -> None:
    nodes = parse("FROM scratch\nRUN <<  EOF  > foo\nbody\nEOF\n").nodes
    assert len(nodes) == 2
    assert [(d.name, d.content) for d in nodes[1].heredocs] == [("EOF", "body\n")]


# -- typed forms -----------------------------------------------------------------------------


def test_run_heredoc_is_the_script() -> None:
    run = only("RUN <<EOF\nls /\nwhoami\nEOF\n")
    assert isinstance(run, Run)
    assert run.shell_form is True
    assert run.command == ("<<EOF",)
    assert run.heredocs == (InlineFile("EOF", "ls /\nwhoami\n", chomp=False, expand=True),)


def test_run_heredoc_as_stdin_of_a_command() -> None:
    run = only("RUN python3 <<EOF\nprint('hello world')\nEOF\n")
    assert isinstance(run, Run)
    assert run.command == ("python3 <<EOF",)
    assert run.heredocs == (InlineFile("EOF", "print('hello world')\n"),)


def test_run_heredoc_before_a_command() -> None:
    run = only("RUN <<COMPLEX python3\nprint('hi')\nCOMPLEX\n")
    assert isinstance(run, Run)
    assert run.command == ("<<COMPLEX python3",)
    assert [f.data for f in run.heredocs] == ["print('hi')\n"]


def test_run_heredoc_redirected_to_a_file() -> None:
    run = only("RUN cat <<EOF > /etc/motd\nwelcome\nEOF\n")
    assert isinstance(run, Run)
    assert run.command == ("cat <<EOF > /etc/motd",)
    assert run.heredocs[0].content == "welcome\n"


def test_run_quoted_heredoc_piped_to_python() -> None:
    run = only('RUN <<\'EOF\' | python\nprint("hello")\nprint("world")\nEOF\n')
    assert isinstance(run, Run)
    assert run.command == ("<<'EOF' | python",)
    assert run.heredocs == (
        InlineFile("EOF", 'print("hello")\nprint("world")\n', chomp=False, expand=False),
    )


def test_run_dash_heredoc_keeps_tabs_in_data_and_strips_them_in_content() -> None:
    run = only("RUN <<-EOF\n\techo test\nEOF\n")
    assert isinstance(run, Run)
    (inline,) = run.heredocs
    assert (inline.data, inline.chomp) == ("\techo test\n", True)
    assert inline.content == "echo test\n"


def test_run_heredoc_with_mount_flag() -> None:
    run = only("RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n")
    assert isinstance(run, Run)
    assert run.mounts == ("type=cache,target=/foo",)
    assert run.heredocs == (InlineFile("MOUNT", "echo hello\n"),)


def test_run_json_form_has_no_heredocs() -> None:
    run = only('RUN ["<<EOF"]\n')
    assert isinstance(run, Run)
    assert (run.command, run.shell_form, run.heredocs) == (("<<EOF",), False, ())


@pytest.mark.parametrize(
    ("text", "inline"),
    [
        ("COPY <<EOF /bar\nEOF\n", InlineFile("EOF", "", expand=True)),
        ("COPY <<EOF /bar\nTESTING\nEOF\n", InlineFile("EOF", "TESTING\n")),
        ("COPY <<'EOF' /bar\nTESTING\nEOF\n", InlineFile("EOF", "TESTING\n", expand=False)),
        ("COPY <<-EOF /bar\n\tTESTING\nEOF\n", InlineFile("EOF", "\tTESTING\n", chomp=True)),
    ],
)
def test_copy_heredoc_is_an_inline_source(text: str, inline: InlineFile) -> None:
    copy = only(text)
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.inline, copy.dest) == ((), (inline,), "/bar")


def test_copy_dash_heredoc_content_is_stripped() -> None:
    copy = only("COPY <<-EOF /bar\n\tTESTING\n\t\tnested\nEOF\n")
    assert isinstance(copy, Copy)
    assert copy.inline[0].content == "TESTING\nnested\n"


def test_copy_several_heredocs_with_chmod_and_chown() -> None:
    copy = only(
        "COPY --chmod=755 --chown=app <<run.sh <<stop.sh /bin/\n"
        "echo run\nrun.sh\n"
        "echo stop\nstop.sh\n"
    )
    assert isinstance(copy, Copy)
    assert (copy.chmod, copy.chown, copy.dest) == ("755", "app", "/bin/")
    assert [(f.name, f.data) for f in copy.inline] == [
        ("run.sh", "echo run\n"),
        ("stop.sh", "echo stop\n"),
    ]


def test_copy_heredoc_next_to_a_file() -> None:
    copy = only("COPY <<EOF foo.txt /bar\nthis is inline\nEOF\n")
    assert isinstance(copy, Copy)
    assert copy.sources == ("foo.txt",)
    assert copy.inline == (InlineFile("EOF", "this is inline\n"),)


def test_copy_heredoc_quotes_in_the_body_are_kept() -> None:
    copy = only("COPY <<EOF /quotes\n\"foo\"\n'bar'\nEOF\n")
    assert isinstance(copy, Copy)
    assert copy.inline[0].data == "\"foo\"\n'bar'\n"


def test_add_heredoc() -> None:
    add = only("ADD --chmod=600 <<EOF /etc/conf\nkey=value\nEOF\n")
    assert isinstance(add, Add)
    assert (add.sources, add.dest, add.chmod) == ((), "/etc/conf", "600")
    assert add.inline == (InlineFile("EOF", "key=value\n"),)


@pytest.mark.parametrize("keyword", ["COPY", "ADD"])
def test_heredoc_cannot_be_the_destination(keyword: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        body(f"FROM scratch\n{keyword} /foo <<EOF\nEOF\n")
    assert f"{keyword} cannot accept a heredoc as a destination" in str(caught.value)
    assert caught.value.line == 2


# -- expansion through the plan ------------------------------------------------------------------

_VARS = "FROM scratch\nARG NAME=world\nENV GREETING=hello\n"


def _inline_after_plan(text: str) -> tuple[InlineFile, ...]:
    step = expanded(_VARS + text)[-1]
    assert isinstance(step, Copy | Add)
    return step.inline


def test_copy_heredoc_body_expands_arg_and_env() -> None:
    (inline,) = _inline_after_plan("COPY <<EOF /greeting\n$GREETING ${NAME}!\nEOF\n")
    assert inline.content == "hello world!\n"


def test_quoted_delimiter_leaves_variables_as_written() -> None:
    for delimiter in ("'EOF'", '"EOF"', "E'OF'"):
        (inline,) = _inline_after_plan(f"COPY <<{delimiter} /g\n$GREETING ${{NAME}}\nEOF\n")
        assert inline.content == "$GREETING ${NAME}\n", delimiter


def test_expanded_body_keeps_quotes_and_honours_backslash_escapes() -> None:
    text = "COPY <<EOF /g\n'$NAME' \"$NAME\" \\$NAME ${MISSING:-dflt}\nEOF\n"
    (inline,) = _inline_after_plan(text)
    assert inline.content == "'world' \"world\" $NAME dflt\n"


def test_dash_heredoc_is_stripped_then_expanded() -> None:
    (inline,) = _inline_after_plan("COPY <<-EOF /g\n\t\t$NAME\n\tEOF\n")
    assert inline.content == "world\n"


def test_mixed_heredocs_expand_independently() -> None:
    text = "ADD <<ON <<'OFF' /d/\n$NAME\nON\n$NAME\nOFF\n"
    assert [f.content for f in _inline_after_plan(text)] == ["world\n", "$NAME\n"]


def test_heredoc_body_sees_env_from_before_the_instruction_only() -> None:
    text = "ENV NAME=first\nCOPY <<EOF /a\n$NAME\nEOF\nENV NAME=second\n"
    (copy,) = [i for i in expanded(_VARS + text) if isinstance(i, Copy)]
    assert copy.inline[0].content == "first\n"


def test_heredoc_body_uses_backslash_even_with_backtick_escape_directive() -> None:
    # BuildKit expands heredoc bodies with a backslash lexer whatever the escape directive.
    text = "# escape=`\nFROM scratch\nENV V=x\nCOPY <<EOF /a\n\\$V `$V\nEOF\n"
    copy = expanded(text)[-1]
    assert isinstance(copy, Copy)
    assert copy.inline[0].content == "$V `x\n"


def test_run_heredoc_is_never_expanded_by_the_frontend() -> None:
    text = "RUN <<EOF\necho $NAME $GREETING\nEOF\nRUN python3 <<-PY\n\tprint('$NAME')\nPY\n"
    runs = [i for i in expanded(_VARS + text) if isinstance(i, Run)]
    assert [r.command for r in runs] == [("<<EOF",), ("python3 <<-PY",)]
    assert [r.heredocs[0].data for r in runs] == ["echo $NAME $GREETING\n", "\tprint('$NAME')\n"]
