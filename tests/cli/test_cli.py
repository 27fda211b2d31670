"""The ``kiln`` command as a user runs it: output, exit status, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln import __version__
from kiln.cli.main import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_installed_command_reports_its_version() -> None:
    kiln = Path(sys.executable).with_name("kiln")
    out = subprocess.run([kiln, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"kiln, version {__version__}"


def test_help_lists_the_commands() -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert "parse" in out and "check" in out


def test_parse_prints_buildkit_dump(tmp_path: Path) -> None:
    dockerfile = write(
        tmp_path / "Dockerfile",
        'FROM alpine AS base\nCOPY --chown=1:1 a b /c/\nENV A=1 B=2\nRUN ["echo", "hi"]\n',
    )
    code, out, _ = run("parse", "-f", str(dockerfile))
    assert code == 0
    assert out.splitlines() == [
        '(from "alpine" "AS" "base")',
        '(copy ["--chown=1:1"] "a" "b" "/c/")',
        '(env "A" "1" "=" "B" "2" "=")',
        '(run "echo" "hi")',
    ]


def test_parse_reads_standard_input() -> None:
    code, out, _ = run("parse", "-f", "-", stdin="FROM scratch\nCMD echo hi\n")
    assert code == 0
    assert out == '(from "scratch")\n(cmd "echo hi")\n'


def test_parse_json_has_typed_instructions_with_lines() -> None:
    code, out, _ = run("parse", "-f", str(EXAMPLE / "Dockerfile"), "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert [arg["args"][0]["key"] for arg in data["meta_args"]] == ["BASE"]
    build, final = data["stages"]
    assert build["name"] == "build"
    heredoc_copy = build["instructions"][1]
    assert heredoc_copy["instruction"] == "COPY"
    assert heredoc_copy["inline"][0]["data"] == "${GREETING} from kiln\n"
    assert (heredoc_copy["start_line"], heredoc_copy["end_line"]) == (6, 8)
    assert final["instructions"][-1] == {
        "instruction": "CMD",
        "start_line": 18,
        "end_line": 18,
        "source": 'CMD ["/app/hello.sh"]',
        "command": ["/app/hello.sh"],
        "shell_form": False,
    }


def test_parse_error_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    dockerfile = write(tmp_path / "Dockerfile", "FROM alpine\nRUNN echo hi\n")
    code, out, err = run("parse", "--format", "json", "-f", str(dockerfile))
    assert code == 1
    assert out == ""
    assert err == f'error: {dockerfile}:2: unknown instruction "RUNN" (did you mean RUN?)\n'
    # BuildKit's parser keeps an unknown instruction as a node with its arguments ignored
    assert run("parse", "-f", str(dockerfile)) == (0, '(from "alpine")\n(runn "")\n', "")


def test_missing_dockerfile_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run("parse", "-f", str(tmp_path / "nope"))
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'nope'}: cannot read Dockerfile")
    assert "Traceback" not in err


def test_check_of_the_example_is_clean() -> None:
    code, out, _ = run("check", str(EXAMPLE))
    assert (code, out) == (0, "")


def test_check_reports_every_broken_instruction(tmp_path: Path) -> None:
    write(
        tmp_path / "Dockerfile",
        "FROM alpine\nRUNN echo hi\nCOPY --user=me a /b\nHEALTHCHECK --interval=x CMD true\n",
    )
    code, out, _ = run("check", str(tmp_path))
    assert code == 1
    assert out.splitlines() == [
        f'{tmp_path}/Dockerfile:2: unknown instruction "RUNN" (did you mean RUN?)',
        f"{tmp_path}/Dockerfile:3: COPY: unknown flag: --user",
        f"{tmp_path}/Dockerfile:4: HEALTHCHECK --interval: invalid duration 'x'",
    ]


def test_check_reports_missing_and_ignored_copy_sources(tmp_path: Path) -> None:
    write(tmp_path / "app" / "main.py", "print('hi')\n")
    write(tmp_path / "secrets.txt", "hunter2\n")
    write(tmp_path / ".dockerignore", "# keep secrets out\nsecrets.txt\n")
    write(
        tmp_path / "Dockerfile",
        "FROM alpine\n"
        "COPY app/ /app/\n"
        "COPY secrets.txt /etc/\n"
        "COPY missing.txt /etc/\n"
        "COPY *.md /docs/\n"
        "COPY --from=alpine /etc/os-release /\n",
    )
    code, out, _ = run("check", "-f", str(tmp_path / "Dockerfile"), str(tmp_path))
    assert code == 1
    assert out.splitlines() == [
        f'{tmp_path}/Dockerfile:3: COPY source "secrets.txt" is excluded by '
        f"{tmp_path}/.dockerignore:2",
        f'{tmp_path}/Dockerfile:4: COPY source "missing.txt" not found in the build context',
        f'{tmp_path}/Dockerfile:5: COPY source "*.md" matches no file in the build context',
    ]


def test_check_uses_the_dockerfile_specific_ignore_file(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a\n")
    write(tmp_path / ".dockerignore", "a.txt\n")
    write(tmp_path / "build" / "app.Dockerfile.dockerignore", "# nothing ignored\n")
    write(tmp_path / "build" / "app.Dockerfile", "FROM alpine\nCOPY a.txt /\n")
    code, out, _ = run("check", "-f", str(tmp_path / "build" / "app.Dockerfile"), str(tmp_path))
    assert (code, out) == (0, "")


def test_check_warnings_alone_exit_zero(tmp_path: Path) -> None:
    write(
        tmp_path / "Dockerfile",
        "FROM alpine\nARG NAME=x\nRUN echo a \\\n\n  b\nLABEL who=$NAMEE\n",
    )
    code, out, _ = run("check", "--build-arg", "UNUSED=1", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        f"{tmp_path}/Dockerfile:5: warning: empty continuation line "
        "(it will become an error in a future release)",
        f"{tmp_path}/Dockerfile:6: warning: usage of undefined variable '$NAMEE' "
        "(did you mean $NAME?)",
        f"{tmp_path}/Dockerfile: warning: build-arg 'UNUSED' was not consumed by any ARG",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM alpine\nRUN <<EOF\necho hi\n",
         "2: unterminated heredoc <<EOF: no line 'EOF' closes it"),
        ('FROM alpine\nENV A="unclosed\n', '2: failed to process "\\"unclosed": unexpected end '
         "of statement while looking for matching double-quote"),
        ("FROM alpine AS a\nCOPY --from=b x y\nFROM alpine AS b\n",
         '2: cannot copy from stage "b", it needs to be defined before current stage "a"'),
        ("FROM alpine AS a\nFROM a AS b\nCOPY --from=c x y\nFROM b AS c\n",
         "4: circular dependency detected on stage: b"),
    ],
)  # fmt: skip
def test_check_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "x", "")
    write(tmp_path / "Dockerfile", text)
    code, out, _ = run("check", str(tmp_path))
    assert code == 1
    assert out == f"{tmp_path}/Dockerfile:{message}\n"


def test_check_unknown_target(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM alpine AS build\nFROM build AS test\n")
    code, out, _ = run("check", "--target", "tst", str(tmp_path))
    assert code == 1
    assert out == (
        f'{tmp_path}/Dockerfile: target stage "tst" could not be found (did you mean test?)\n'
    )


def test_check_warns_about_broken_json_exec_form(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM alpine\nCMD ['echo', 'hi']\n")
    code, out, _ = run("check", str(tmp_path))
    assert code == 0
    assert out == (
        f"{tmp_path}/Dockerfile:2: warning: CMD looks like a JSON array but is not valid "
        "JSON, so it runs in a shell\n"
    )


def test_check_warns_about_an_onbuild_trigger_that_cannot_work(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM alpine\nONBUILD RUNN make\n")
    code, out, _ = run("check", str(tmp_path))
    assert code == 0
    assert out == (
        f"{tmp_path}/Dockerfile:2: warning: ONBUILD trigger will fail in every build based on "
        'this image: unknown instruction "RUNN" (did you mean RUN?)\n'
    )


def test_check_summarises_on_stderr(tmp_path: Path) -> None:
    write(tmp_path / "Dockerfile", "FROM alpine\nRUNN a\nLABEL a=$B\nRUN echo \\\n\n  b\n")
    _, _, err = run("check", str(EXAMPLE))
    assert err == f"{EXAMPLE}/Dockerfile: no problems\n"
    _, _, err = run("check", str(tmp_path))
    assert err == f"{tmp_path}/Dockerfile: 1 error, 1 warning\n"
