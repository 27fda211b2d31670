"""The escape directive, directive placement, line continuations and line numbers."""

from __future__ import annotations

import pytest

from kiln.dockerfile.instructions import Copy, Env, Run, Workdir
from kiln.dockerfile.parser import parse
from kiln.errors import DockerfileError
from tests.dockerfile.support import body, dockerfile, expanded


def originals(text: str) -> list[str]:
    return [node.original for node in parse(text).nodes]


def lines(text: str) -> list[tuple[int, int]]:
    return [(node.start_line, node.end_line) for node in parse(text).nodes]


# -- the escape directive ------------------------------------------------------------------------


def test_backtick_escape_continues_lines_and_keeps_backslashes() -> None:
    result = parse("# escape=`\nFROM mcr.microsoft.com/windows\nRUN dir `\n  c:\\\n")
    assert result.escape == "`"
    assert [n.original for n in result.nodes] == [
        "FROM mcr.microsoft.com/windows",
        "RUN dir   c:\\",
    ]
    assert [(n.start_line, n.end_line) for n in result.nodes] == [(2, 2), (3, 4)]


def test_backtick_escape_windows_paths_in_copy_and_workdir() -> None:
    text = "# escape=`\nFROM scratch\nCOPY C:\\src\\app.exe C:\\app\\\nWORKDIR C:\\app\n"
    copy, workdir = body(text)
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest) == (("C:\\src\\app.exe",), "C:\\app\\")
    assert isinstance(workdir, Workdir)
    assert workdir.path == "C:\\app"


def test_backslash_at_end_of_line_is_not_a_continuation_with_backtick_escape() -> None:
    assert originals("# escape=`\nFROM scratch\nRUN echo a\\\nRUN echo b\n") == [
        "FROM scratch",
        "RUN echo a\\",
        "RUN echo b",
    ]


def test_backtick_is_an_ordinary_character_with_the_default_escape() -> None:
    assert originals("FROM scratch\nRUN echo a `\nRUN b\n") == [
        "FROM scratch",
        "RUN echo a `",
        "RUN b",
    ]


def test_backtick_escape_applies_to_variable_expansion() -> None:
    text = '# escape=`\nFROM scratch\nENV A=1\nENV B="q`"uote" C=`$A D=C:\\dir\\$A\n'
    env = expanded(text)[-1]
    assert isinstance(env, Env)
    assert [(p.key, p.value) for p in env.pairs] == [
        ("B", 'q"uote'),
        ("C", "$A"),
        ("D", "C:\\dir\\1"),
    ]


def test_escape_directive_is_case_insensitive_and_tolerates_spaces() -> None:
    result = parse("#  ESCAPE =  `  \nFROM scratch\nRUN a `\n b\n")
    assert result.escape == "`"
    assert result.nodes[1].original == "RUN a  b"


def test_escape_directive_may_follow_a_syntax_directive() -> None:
    df = dockerfile("# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\n")
    assert df.escape == "`"
    assert df.directives.syntax is not None
    assert (df.directives.syntax.value, df.directives.syntax.line) == ("docker/dockerfile:1", 1)


def test_check_directive_is_recorded() -> None:
    df = dockerfile("# check=skip=JSONArgsRecommended\nFROM scratch\n")
    assert df.directives.check is not None
    assert df.directives.check.value == "skip=JSONArgsRecommended"


@pytest.mark.parametrize(
    "prefix",
    [
        "# a plain comment\n",  # after a comment
        "\n",  # after a blank line
        "# unknown=directive\n",  # after something that is not a known directive
        "FROM scratch\n",  # after an instruction
    ],
)
def test_a_late_escape_directive_is_just_a_comment(prefix: str) -> None:
    result = parse(prefix + "# escape=`\nFROM scratch\nRUN a `\nRUN b\n")
    assert result.escape == "\\"
    assert [n.original for n in result.nodes][-2:] == ["RUN a `", "RUN b"]


def test_late_syntax_directive_is_not_recorded() -> None:
    df = dockerfile("FROM scratch\n# syntax=docker/dockerfile:1\n")
    assert df.directives.syntax is None


def test_duplicate_escape_directive_is_an_error_on_its_line() -> None:
    with pytest.raises(DockerfileError) as caught:
        parse("# escape=`\n# escape=\\\nFROM scratch\n")
    assert caught.value.line == 2
    assert str(caught.value) == "Dockerfile:2: only one escape parser directive can be used"


def test_duplicate_syntax_directive_is_an_error() -> None:
    with pytest.raises(DockerfileError) as caught:
        parse("# syntax=a\n# syntax=b\nFROM scratch\n")
    assert caught.value.line == 2
    assert "only one syntax parser directive" in str(caught.value)


@pytest.mark.parametrize("value", ["x", "``", "\\\\", "'"])
def test_invalid_escape_value_is_an_error(value: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        parse(f"# escape={value}\nFROM scratch\n", file="Dockerfile.win")
    assert caught.value.line == 1
    assert str(caught.value).startswith("Dockerfile.win:1: invalid escape token")
    assert "does not match ` or \\" in str(caught.value)


def test_repeated_directive_after_the_directive_block_is_harmless() -> None:
    result = parse("# escape=`\nFROM scratch\n# escape=`\n")
    assert result.escape == "`"


# -- continuations -----------------------------------------------------------------------------


def test_comment_lines_inside_a_continuation_are_dropped_without_warning() -> None:
    result = parse("FROM scratch\nRUN apt-get update \\\n# explain\n    # indented\n  && done\n")
    assert result.nodes[1].original == "RUN apt-get update   && done"
    assert (result.nodes[1].start_line, result.nodes[1].end_line) == (2, 5)
    assert result.warnings == []


def test_blank_lines_inside_a_continuation_are_skipped_with_one_warning() -> None:
    result = parse("FROM scratch\nRUN a \\\n\n   \n  b \\\n\n c\nRUN d\n")
    assert [n.original for n in result.nodes] == ["FROM scratch", "RUN a   b  c", "RUN d"]
    assert [(n.start_line, n.end_line) for n in result.nodes] == [(1, 1), (2, 7), (8, 8)]
    assert len(result.warnings) == 1
    assert "empty continuation line" in result.warnings[0].message.lower()
    assert 3 <= result.warnings[0].line <= 7


def test_empty_continuation_warning_is_located_at_the_end_of_the_instruction() -> None:
    result = parse("FROM scratch\nRUN a \\\n\n  b \\\n  c\n")
    assert [w.line for w in result.warnings] == [5]


def test_every_instruction_with_empty_continuations_gets_its_own_warning() -> None:
    result = parse("FROM scratch\nRUN a \\\n\n b\nRUN c \\\n\n d\nRUN e\n")
    assert len(result.warnings) == 2


def test_empty_continuation_warning_reaches_the_dockerfile() -> None:
    assert len(dockerfile("FROM scratch\nRUN a \\\n\n b\n").warnings) == 1


def test_lines_without_continuation_have_no_warnings() -> None:
    assert parse("FROM scratch\n\n\nRUN a\n\n").warnings == []


def test_continuation_at_end_of_file() -> None:
    run = body("FROM scratch\nRUN echo hi \\")[0]
    assert isinstance(run, Run)
    assert run.command == ("echo hi",)
    assert (run.location.start_line, run.location.end_line) == (2, 2)


def test_continuation_then_only_blank_lines_at_end_of_file() -> None:
    result = parse("FROM scratch\nRUN echo hi \\\n\n")
    assert result.nodes[1].original == "RUN echo hi "
    assert result.nodes[1].end_line == 3


def test_continuation_with_trailing_blanks_after_the_escape() -> None:
    assert originals("FROM scratch\nRUN a \\  \t\n b\n")[1] == "RUN a  b"


def test_escaped_escape_at_end_of_line_is_not_a_continuation() -> None:
    assert originals("FROM scratch\nRUN echo a\\\\\nRUN b\n") == [
        "FROM scratch",
        "RUN echo a\\\\",
        "RUN b",
    ]


def test_line_that_is_only_an_escape_continues() -> None:
    assert originals("FROM scratch\nRUN a \\\n\\\n b\n")[1] == "RUN a  b"


def test_continuation_lines_keep_their_indentation() -> None:
    assert originals("FROM scratch\nRUN a \\\n    b\n")[1] == "RUN a     b"


def test_keyword_and_flags_may_be_split_across_lines() -> None:
    node = parse("FROM scratch\nRUN \\\n  --network=none \\\n  true\n").nodes[1]
    assert (node.keyword, node.flags, node.args) == ("RUN", ["--network=none"], ["true"])


# -- line numbers --------------------------------------------------------------------------------


def test_line_numbers_skip_comments_and_blank_lines() -> None:
    text = "# comment\n\nFROM scratch\n\n  # indented comment\n   RUN a\nENV A=1 \\\n    B=2\n"
    assert lines(text) == [(3, 3), (6, 6), (7, 8)]


def test_typed_instructions_carry_their_lines() -> None:
    text = "FROM scratch\nRUN a \\\n b \\\n c\nCOPY <<EOF /x\n1\n2\nEOF\nUSER me\n"
    assert [(i.location.start_line, i.location.end_line) for i in body(text)] == [
        (2, 4),
        (5, 8),
        (9, 9),
    ]


def test_error_spans_the_whole_multi_line_instruction() -> None:
    with pytest.raises(DockerfileError) as caught:
        body("FROM scratch\nCOPY \\\n  onlyone\n")
    assert (caught.value.line, caught.value.end_line) == (2, 3)


# -- line endings and byte order mark -------------------------------------------------------------


def test_crlf_line_endings() -> None:
    result = parse("FROM scratch\r\nRUN a \\\r\n  b\r\nENV K=v\r\n")
    assert [n.original for n in result.nodes] == ["FROM scratch", "RUN a   b", "ENV K=v"]
    assert result.nodes[2].args == ["K", "v", "="]
    assert lines("FROM scratch\r\nRUN a \\\r\n  b\r\nENV K=v\r\n") == [(1, 1), (2, 3), (4, 4)]


def test_crlf_with_backtick_escape() -> None:
    result = parse("# escape=`\r\nFROM scratch\r\nRUN a `\r\n b\r\n")
    assert result.escape == "`"
    assert result.nodes[1].original == "RUN a  b"


def test_byte_order_mark_is_ignored() -> None:
    result = parse("\ufeffFROM scratch\nRUN a\n")
    assert [n.keyword for n in result.nodes] == ["FROM", "RUN"]
    assert result.nodes[0].original == "FROM scratch"


def test_directive_on_a_line_starting_with_a_byte_order_mark() -> None:
    result = parse("\ufeff# escape=`\nFROM scratch\nRUN a `\n b\n")
    assert result.escape == "`"
    assert result.nodes[1].original == "RUN a  b"


# -- comments ----------------------------------------------------------------------------------


def test_hash_inside_an_instruction_is_not_a_comment() -> None:
    run = body("FROM scratch\nRUN echo hi # not a comment\n")[0]
    assert isinstance(run, Run)
    assert run.command == ("echo hi # not a comment",)


def test_keyword_case_is_kept_but_does_not_matter() -> None:
    result = parse("from scratch\nRuN echo\n")
    assert [(n.keyword, n.name) for n in result.nodes] == [("from", "from"), ("RuN", "run")]
    run = body("from scratch\nRuN echo\n")[0]
    assert isinstance(run, Run)
    assert run.name == "RUN"
