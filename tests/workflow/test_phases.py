"""The workflow's rules: phase order, fail-fast, allowed-to-fail, exit plugins that always
run, cancellation by signal, argument checking, plugin discovery and the results record.

The plugins here are the test's own; they build nothing, so no engine is opened (the
built-in plugins, which do build, are tested in test_plugins.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from kiln.workflow import (
    BuildDescription,
    BuildResults,
    BuildWorkflow,
    DescriptionError,
    NoArgs,
    Phase,
    Plugin,
    PluginError,
    PluginRegistry,
)
from kiln.workflow.plugins import BUILTIN_PLUGINS
from tests.processes import kiln_command

ALL_PHASES = frozenset(Phase)


@dataclass(frozen=True)
class MarkArgs:
    text: str = ""
    fail: bool = False
    numbers: list[int] = field(default_factory=list)
    limit: float | None = None


@dataclass(frozen=True)
class Mark:
    text: str


class Marker(Plugin[MarkArgs, Mark]):
    """Records that it ran (in the workflow's log); fails when asked to."""

    key = "marker"
    phases = ALL_PHASES

    def run(self) -> Mark:
        self.log(f"ran {self.args.text}")
        if self.args.fail:
            raise RuntimeError(f"{self.args.text} failed on purpose")
        return Mark(self.args.text)


class Reader(Plugin[NoArgs, str]):
    """Reads the marker's result through the typed accessor."""

    key = "reader"
    phases = ALL_PHASES

    def run(self) -> str:
        mark = self.workflow.result_of(Marker)
        return f"saw {mark.text}" if mark is not None else "saw nothing"


def source(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "src"
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    return {"provider": "path", "uri": f"file://{root}"}


def mark(text: str, **extra: Any) -> dict[str, Any]:
    args = {"text": text, **{k: v for k, v in extra.items() if k in ("fail",)}}
    return {"name": "marker", "args": args,
            **{k: v for k, v in extra.items() if k not in ("fail",)}}  # fmt: skip


def workflow(tmp_path: Path, **phases: list[dict[str, Any]]) -> BuildWorkflow:
    data: dict[str, Any] = {"source": source(tmp_path), "image": "example/app:1"}
    data.setdefault("buildstep_plugins", [mark("build")])
    data.update(phases)
    return BuildWorkflow(BuildDescription.from_dict(data), plugins=PluginRegistry([Marker, Reader]))


def ran(results: BuildResults) -> list[str]:
    return [line.removeprefix("marker: ran ") for line in results.logs if "marker: ran" in line]


def test_phases_run_in_order_and_plugins_in_list_order(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        exit_plugins=[mark("exit1"), mark("exit2")],
        postbuild_plugins=[mark("post")],
        prepublish_plugins=[mark("prepublish")],
        prebuild_plugins=[mark("pre1"), mark("pre2")],
    ).run()
    assert not results.failed, results.error
    assert ran(results) == ["pre1", "pre2", "build", "prepublish", "post", "exit1", "exit2"]
    assert [(r.phase, r.result) for r in results.plugins] == [
        ("prebuild", {"text": "pre1"}), ("prebuild", {"text": "pre2"}),
        ("buildstep", {"text": "build"}), ("prepublish", {"text": "prepublish"}),
        ("postbuild", {"text": "post"}), ("exit", {"text": "exit1"}), ("exit", {"text": "exit2"}),
    ]  # fmt: skip
    starts = [r.started for r in results.plugins]
    assert starts == sorted(starts) and all(r.duration >= 0 for r in results.plugins)
    assert results.started <= starts[0] and results.duration >= sum(
        r.duration for r in results.plugins
    )


def test_a_failing_plugin_stops_the_build_and_jumps_to_the_exit_plugins(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        prebuild_plugins=[mark("pre1"), mark("pre2", fail=True), mark("pre3")],
        postbuild_plugins=[mark("post")],
        exit_plugins=[mark("exit")],
    ).run()
    assert ran(results) == ["pre1", "pre2", "exit"]
    assert results.failed and not results.cancelled
    assert results.error == "plugin marker failed: RuntimeError: pre2 failed on purpose"
    failed = results.plugins[1]
    assert failed.error == "RuntimeError: pre2 failed on purpose" and failed.result is None


def test_a_plugin_allowed_to_fail_records_its_error_and_the_build_goes_on(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        prebuild_plugins=[mark("flaky", fail=True, is_allowed_to_fail=True), mark("pre2")],
        postbuild_plugins=[mark("post")],
    ).run()
    assert ran(results) == ["flaky", "pre2", "build", "post"]
    assert not results.failed and results.error is None
    flaky = results.plugins[0]
    assert flaky.allowed_to_fail and flaky.error == "RuntimeError: flaky failed on purpose"


def test_every_exit_plugin_runs_and_their_failures_are_reported_together(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        exit_plugins=[mark("e1", fail=True), mark("e2"), mark("e3", fail=True)],
    ).run()
    assert ran(results) == ["build", "e1", "e2", "e3"]
    assert results.failed
    assert results.error == (
        "exit plugins failed: marker: RuntimeError: e1 failed on purpose; "
        "marker: RuntimeError: e3 failed on purpose"
    )


def test_exit_plugins_run_after_a_build_failure_and_both_errors_are_kept(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        buildstep_plugins=[mark("build", fail=True)],
        exit_plugins=[mark("cleanup", fail=True), mark("report")],
    ).run()
    assert ran(results) == ["build", "cleanup", "report"]
    assert results.error is not None
    assert results.error.startswith("plugin marker failed: RuntimeError: build failed")
    assert "exit plugins failed: marker: RuntimeError: cleanup failed" in results.error


def test_a_source_that_cannot_be_had_fails_the_build_and_exit_plugins_still_run(
    tmp_path: Path,
) -> None:
    description = BuildDescription.from_dict({
        "source": {"provider": "git", "uri": f"file://{tmp_path}/no-such-repo"},
        "image": "example/app:1", "exit_plugins": [mark("exit")],
        "buildstep_plugins": [mark("build")],
    })  # fmt: skip
    results = BuildWorkflow(description, plugins=PluginRegistry([Marker])).run()
    assert ran(results) == ["exit"]
    assert results.failed and results.error is not None and "cannot fetch" in results.error


def test_plugins_read_each_others_results_through_typed_accessors(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        prebuild_plugins=[{"name": "reader"}, mark("first")],
        postbuild_plugins=[{"name": "reader"}],
    ).run()
    readings = [r.result for r in results.plugins if r.key == "reader"]
    assert readings == ["saw nothing", "saw build"]  # the latest marker's result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"txt": "typo"}, "plugin marker: unknown argument(s) txt (it takes: fail, limit, "
                          "numbers, text)"),
        ({"fail": "yes"}, "plugin marker: argument fail must be true or false, not str 'yes'"),
        ({"numbers": [1, "2"]}, "plugin marker: argument numbers must be list[int], "
                                "not list [1, '2']"),
        ({"limit": True}, "argument limit must be float | None, not bool True"),
    ],
)  # fmt: skip
def test_bad_arguments_are_errors_before_anything_runs(
    tmp_path: Path, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(PluginError, match=None) as raised:
        workflow(tmp_path, prebuild_plugins=[{"name": "marker", "args": {"text": "x"}}],
                 exit_plugins=[{"name": "marker", "args": args}])  # fmt: skip
    assert message in str(raised.value)


def test_arguments_of_the_right_types_are_taken(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        prebuild_plugins=[{"name": "marker",
                           "args": {"text": "ok", "numbers": [1, 2], "limit": 2}}],
    ).run()  # fmt: skip
    assert not results.failed and ran(results)[0] == "ok"


def test_a_missing_plugin_is_an_error_when_required_and_a_warning_otherwise(
    tmp_path: Path,
) -> None:
    with pytest.raises(PluginError, match="prebuild_plugins: no plugin named 'nope'"):
        workflow(tmp_path, prebuild_plugins=[{"name": "nope"}])
    results = workflow(tmp_path, prebuild_plugins=[{"name": "nope", "required": False}]).run()
    assert not results.failed
    assert results.warnings == ["prebuild_plugins: plugin 'nope' is not installed, skipped"]


def test_a_plugin_configured_in_a_phase_it_does_not_run_in_is_an_error(tmp_path: Path) -> None:
    data = {"source": source(tmp_path), "image": "app:1",
            "exit_plugins": [{"name": "tag_and_push"}]}  # fmt: skip
    with pytest.raises(PluginError, match="exit_plugins: plugin tag_and_push runs in "):
        BuildWorkflow(BuildDescription.from_dict(data), plugins=PluginRegistry(BUILTIN_PLUGINS))


def test_descriptions_are_checked_key_by_key(tmp_path: Path) -> None:
    with pytest.raises(DescriptionError, match=r"unknown key\(s\) prebuild_plugin$"):
        BuildDescription.from_dict(
            {"source": source(tmp_path), "image": "a", "prebuild_plugin": []}
        )
    with pytest.raises(PluginError, match=r"prebuild_plugins\[0\]: unknown key\(s\) arg"):
        BuildDescription.from_dict(
            {"source": source(tmp_path), "image": "a",
             "prebuild_plugins": [{"name": "marker", "arg": {}}]}
        )  # fmt: skip
    (tmp_path / "bad.yaml").write_text("image: [unclosed\n")
    with pytest.raises(DescriptionError, match=r"bad.yaml: not valid YAML"):
        BuildDescription.load(tmp_path / "bad.yaml")


def test_yaml_and_json_descriptions_describe_the_same_build(tmp_path: Path) -> None:
    data = {
        "source": source(tmp_path), "image": "example/app:1",
        "target_registries": ["localhost:5000"], "target_registries_insecure": True,
        "prebuild_plugins": [{"name": "marker", "args": {"text": "a"}, "required": False}],
    }  # fmt: skip
    (tmp_path / "build.json").write_text(json.dumps(data))
    (tmp_path / "build.yaml").write_text(
        f"source: {{provider: path, uri: 'file://{tmp_path}/src'}}\n"
        "image: example/app:1\n"
        "target_registries: [localhost:5000]\n"
        "target_registries_insecure: true\n"
        "prebuild_plugins:\n"
        "  - name: marker\n"
        "    args: {text: a}\n"
        "    required: false\n"
    )
    from_json = BuildDescription.load(tmp_path / "build.json")
    assert from_json == BuildDescription.load(tmp_path / "build.yaml")
    assert BuildDescription.from_dict(from_json.to_dict()) == from_json


def test_results_survive_a_json_round_trip(tmp_path: Path) -> None:
    results = workflow(
        tmp_path,
        prebuild_plugins=[mark("flaky", fail=True, is_allowed_to_fail=True)],
    ).run()
    results.write(tmp_path / "out" / "results.json")
    again = BuildResults.from_json((tmp_path / "out" / "results.json").read_text())
    assert again == results
    assert again.plugin("marker") is not None and again.dockerfile == "FROM scratch\n"


PLUGIN_FILE = """
import os, time
from dataclasses import dataclass
from kiln.workflow import NoArgs, Phase, Plugin


@dataclass(frozen=True)
class SleepArgs:
    seconds: float = 60.0


class Sleeper(Plugin[SleepArgs, None]):
    key = "sleeper"
    phases = frozenset(Phase)

    def run(self) -> None:
        open(os.environ["READY_FILE"], "w").close()
        time.sleep(self.args.seconds)


class Cleanup(Plugin[NoArgs, str]):
    key = "cleanup"
    phases = frozenset({Phase.EXIT})

    def run(self) -> str:
        return "cleaned up"
"""


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_the_build_and_the_exit_plugins_still_run(
    tmp_path: Path, signal_number: signal.Signals
) -> None:
    (tmp_path / "plugins.py").write_text(PLUGIN_FILE)
    (tmp_path / "build.yaml").write_text(
        f"source: {{provider: path, uri: 'file://{tmp_path}/src'}}\n"
        "image: example/app:1\n"
        "plugin_files: [plugins.py]\n"
        "prebuild_plugins: [{name: sleeper}]\n"
        "buildstep_plugins: [{name: sleeper, args: {seconds: 0}}]\n"
        "exit_plugins: [{name: cleanup}, {name: store_metadata, args: {path: meta.json}}]\n"
    )
    source(tmp_path)
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [kiln_command(), "workflow", "run", "build.yaml",
         "--results", "results.json"],
        cwd=tmp_path, env={**os.environ, "READY_FILE": str(ready)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal_number)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, (out, err)
    assert f"error: build failed: cancelled by {signal_number.name}" in err
    for name in ("results.json", "meta.json"):  # the CLI's, and the exit plugin's own
        results = BuildResults.from_json((tmp_path / name).read_text())
        assert results.cancelled and results.failed
        assert [r.key for r in results.plugins][:2] == ["sleeper", "cleanup"]
        assert results.plugins[0].error == "cancelled"
        assert results.plugin("cleanup").result == "cleaned up"  # type: ignore[union-attr]


def test_plugins_come_from_plugin_files_and_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plugins.py").write_text(PLUGIN_FILE)
    registry = PluginRegistry()
    registry.load_file(tmp_path / "plugins.py")
    assert sorted(registry.plugins) == ["cleanup", "sleeper"]
    with pytest.raises(PluginError, match=r"plugin file .*nothing\.py: defines no plugin"):
        (tmp_path / "nothing.py").write_text("X = 1\n")
        registry.load_file(tmp_path / "nothing.py")
    with pytest.raises(PluginError, match=r"plugin file .*broken\.py: NameError"):
        (tmp_path / "broken.py").write_text("undefined_name\n")
        registry.load_file(tmp_path / "broken.py")

    # An installed distribution declaring the kiln.plugins entry-point group.
    site = tmp_path / "site"
    (site / "kiln_extra_plugins.py").parent.mkdir()
    (site / "kiln_extra_plugins.py").write_text(PLUGIN_FILE)
    info = site / "kiln_extra_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kiln-extra-plugins\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[kiln.plugins]\nextra = kiln_extra_plugins\n")
    monkeypatch.syspath_prepend(str(site))
    found = PluginRegistry.default()
    assert {"sleeper", "cleanup", "tag_and_push"} <= set(found.plugins)
    assert found.get("sleeper").__module__ == "kiln_extra_plugins"  # type: ignore[union-attr]


def test_the_workflow_cli_reports_a_failed_build_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "build.json").write_text(json.dumps({
        "source": {"provider": "path", "uri": f"file://{tmp_path}/missing"},
        "image": "app:1",
    }))  # fmt: skip
    result = CliRunner().invoke(cli, ["workflow", "run", str(tmp_path / "build.json"), "-q",
                                      "--results", str(tmp_path / "r.json")])  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: build failed: path source file://{tmp_path}/missing: no such directory"
    ]
    assert BuildResults.from_json((tmp_path / "r.json").read_text()).failed
