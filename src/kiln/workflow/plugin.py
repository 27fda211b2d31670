"""Plugins: typed steps of a build workflow, configured per phase and found by name.

A plugin is a class with a ``key``, the phases it may run in, a frozen dataclass of
arguments and a result type, written as ``class TagByLabels(Plugin[TagArgs, Tags])``.
Arguments from a JSON or YAML description are checked against that dataclass before
anything runs: an unknown name or a wrong type is an error, never dropped (atomic-reactor
only warned). Plugins read each other's results through ``workflow.result_of(PluginClass)``,
typed, instead of string-keyed dicts.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import importlib.util
import inspect
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.workflow.workflow import BuildWorkflow

ENTRY_POINT_GROUP = "kiln.plugins"


class PluginError(KilnError):
    """A plugin that cannot be found, configured or loaded."""


class Phase(enum.Enum):
    """The workflow's phases, in the order they run; the value is atomic-reactor's key."""

    PRE_BUILD = "prebuild"
    BUILD = "buildstep"
    PRE_PUBLISH = "prepublish"
    POST_BUILD = "postbuild"
    EXIT = "exit"

    @property
    def config_key(self) -> str:
        """Where a build description lists this phase's plugins: ``prebuild_plugins``..."""
        return f"{self.value}_plugins"


@dataclass(frozen=True)
class NoArgs:
    """The arguments of a plugin that takes none."""


A = TypeVar("A")
R = TypeVar("R")


class Plugin(Generic[A, R]):
    """One step of a workflow. Subclasses set ``key`` and ``phases`` and implement ``run``;
    their argument and result types come from the ``Plugin[Args, Result]`` base."""

    key: ClassVar[str]
    phases: ClassVar[frozenset[Phase]]
    allowed_to_fail: ClassVar[bool] = False  # the default for ``is_allowed_to_fail``
    args_type: ClassVar[type[Any]] = NoArgs
    result_type: ClassVar[Any] = type(None)

    def __init__(self, workflow: BuildWorkflow, args: A) -> None:
        self.workflow = workflow
        self.args = args

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Plugin:
                cls.args_type, cls.result_type = typing.get_args(base)

    def run(self) -> R:
        raise NotImplementedError

    def log(self, line: str) -> None:
        self.workflow.log(f"{self.key}: {line}")


@dataclass(frozen=True)
class PluginSpec:
    """One entry of a phase's plugin list, as in atomic-reactor's build JSON."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    required: bool = True
    is_allowed_to_fail: bool | None = None  # None: the plugin's own default

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> PluginSpec:
        unknown = set(data) - {"name", "args", "required", "is_allowed_to_fail"}
        if unknown:
            raise PluginError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{where}: a plugin needs a 'name'")
        args = data.get("args") or {}
        if not isinstance(args, Mapping):
            raise PluginError(f"{where} ({name}): 'args' must be a mapping")
        for flag in ("required", "is_allowed_to_fail"):
            if flag in data and not isinstance(data[flag], bool):
                raise PluginError(f"{where} ({name}): {flag!r} must be true or false")
        return cls(
            name, dict(args), bool(data.get("required", True)), data.get("is_allowed_to_fail")
        )


def parse_args(plugin: type[Plugin[Any, Any]], raw: Mapping[str, Any]) -> Any:
    """``raw`` checked against the plugin's argument dataclass, as an instance of it."""
    args_type = plugin.args_type
    fields = {f.name: f for f in dataclasses.fields(args_type)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise PluginError(
            f"plugin {plugin.key}: unknown argument(s) {', '.join(unknown)} (it takes: {known})"
        )
    hints = typing.get_type_hints(args_type)
    missing = [
        name for name, f in fields.items()
        if name not in raw and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]  # fmt: skip
    if missing:
        raise PluginError(f"plugin {plugin.key}: missing argument(s) {', '.join(missing)}")
    for name, value in raw.items():
        if not _conforms(value, hints[name]):
            raise PluginError(
                f"plugin {plugin.key}: argument {name} must be {_describe(hints[name])}, "
                f"not {type(value).__name__} {value!r}"
            )
    return args_type(**raw)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether JSON-ish ``value`` is of type ``hint`` (no coercion: "1" is not an int)."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, p) for p in params)
    if origin is typing.Literal:
        return value in params
    if origin in (list, tuple, Iterable) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and params and params[-1] is not Ellipsis:
            return len(value) == len(params) and all(
                _conforms(v, p) for v, p in zip(value, params, strict=True)
            )
        return not params or all(_conforms(v, params[0]) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        key, item = params or (Any, Any)
        return all(_conforms(k, key) and _conforms(v, item) for k, v in value.items())
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return {"str": "a string", "int": "an integer", "bool": "true or false",
                "float": "a number"}.get(hint.__name__, hint.__name__)  # fmt: skip
    return str(hint).replace("typing.", "")


class PluginRegistry:
    """Plugins by key: the built-in ones, those of the ``kiln.plugins`` entry-point group,
    and those defined in plugin files named by the build."""

    def __init__(self, plugins: Iterable[type[Plugin[Any, Any]]] = ()) -> None:
        self.plugins: dict[str, type[Plugin[Any, Any]]] = {}
        for plugin in plugins:
            self.add(plugin)

    @classmethod
    def default(cls, plugin_files: Iterable[Path] = ()) -> PluginRegistry:
        from kiln.workflow.plugins import BUILTIN_PLUGINS

        registry = cls(BUILTIN_PLUGINS)
        registry.load_entry_points()
        for path in plugin_files:
            registry.load_file(path)
        return registry

    def add(self, plugin: type[Plugin[Any, Any]]) -> None:
        if not getattr(plugin, "key", "") or not getattr(plugin, "phases", None):
            raise PluginError(f"{plugin.__qualname__}: a plugin needs a key and its phases")
        if not dataclasses.is_dataclass(plugin.args_type):
            raise PluginError(f"plugin {plugin.key}: its arguments must be a dataclass")
        self.plugins[plugin.key] = plugin

    def get(self, key: str) -> type[Plugin[Any, Any]] | None:
        return self.plugins.get(key)

    def load_entry_points(self) -> None:
        """Each entry point names a plugin class, or a module whose plugin classes count."""
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = entry.load()
            except Exception as err:
                raise PluginError(
                    f"plugin entry point {entry.name} ({entry.value}): {err}"
                ) from err
            self._add_from(loaded, f"entry point {entry.name}")

    def load_file(self, path: Path) -> None:
        """Import ``path`` as a module of its own and add the plugins it defines."""
        name = f"kiln_plugin_file_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise PluginError(f"plugin file {path}: not found")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being made
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[name]
            raise PluginError(f"plugin file {path}: {type(err).__name__}: {err}") from err
        if not self._add_from(module, f"plugin file {path}"):
            raise PluginError(f"plugin file {path}: defines no plugin")

    def _add_from(self, loaded: Any, where: str) -> int:
        if inspect.isclass(loaded) and issubclass(loaded, Plugin):
            self.add(loaded)
            return 1
        if not inspect.ismodule(loaded):
            raise PluginError(f"{where}: not a plugin class or module")
        found = [
            value for value in vars(loaded).values()
            if inspect.isclass(value) and issubclass(value, Plugin)
            and value.__module__ == loaded.__name__ and hasattr(value, "key")
        ]  # fmt: skip
        for plugin in found:
            self.add(plugin)
        return len(found)
