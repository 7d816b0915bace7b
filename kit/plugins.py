"""Loading plugins and keeping the registry of what they registered.

Built-in task types are ordinary plugins listed in `DEFAULT_PLUGINS`.
Third-party plugins come from the `kit` entry-point group; `KIT_LOAD_PLUGINS`
(comma-separated distribution names, empty for none) limits which load. A
project may name local plugin modules in its `kit.yaml`. A plugin that fails
to import or to register is recorded with its error and skipped; the others
keep working.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pluggy

from kit import __version__ as kit_version
from kit import hookspecs
from kit.entry_points import entry_points
from kit.errors import ConfigError, PluginError

DEFAULT_PLUGINS = (
    "kit_plugins.inputs",
    "kit_plugins.backbones.bert",
    "kit_plugins.backbones.roberta",
    "kit_plugins.backbones.pretrained_text",
    "kit_plugins.backbones.mlp",
    "kit_plugins.backbones.cnn",
    "kit_plugins.backbones.pretrained_image",
    "kit_plugins.classification",
    "kit_plugins.regression",
    "kit_plugins.token_classification",
    "kit_plugins.generation",
    "kit_plugins.sources",
    "kit_plugins.tracking",
)
ENTRY_POINT_GROUP = "kit"


@dataclass
class PluginInfo:
    """One plugin as `kit plugins` shows it."""

    name: str
    origin: str  # "builtin", "entry point", "project"
    package: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


@dataclass
class Registered:
    """Something a plugin registered, and which plugin did."""

    name: str
    obj: Any
    plugin: str


class Registry:
    """Named objects of one kind (tasks, data sources, ...) and who registered them."""

    def __init__(self, kind: str):
        self.kind = kind
        self.items: dict[str, Registered] = {}
        self.conflicts: dict[str, list[str]] = {}

    def add(self, name: str, obj: Any, plugin: str) -> None:
        if name in self.items:
            first = self.items[name].plugin
            self.conflicts.setdefault(name, [first]).append(plugin)
            raise PluginError(
                f"Plugins '{first}' and '{plugin}' both register a {self.kind} named '{name}'. "
                f"Uninstall one of them, or limit what loads with KIT_LOAD_PLUGINS."
            )
        self.items[name] = Registered(name, obj, plugin)

    def get(self, name: str) -> Registered:
        if name in self.conflicts:
            plugins = " and ".join(f"'{p}'" for p in self.conflicts[name])
            raise PluginError(f"The {self.kind} '{name}' is registered by both {plugins}; kit cannot choose.")
        if name not in self.items:
            known = ", ".join(sorted(self.items)) or "none"
            raise PluginError(f"Unknown {self.kind} '{name}'. Known: {known}. See `kit tasks` or install a plugin.")
        return self.items[name]

    def names(self) -> list[str]:
        return sorted(self.items)


class Plugins:
    """A plugin manager plus the registries filled from it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("kit")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.tasks = Registry("task")
        self.data_sources = Registry("data source")
        self.input_kinds = Registry("input kind")
        self.backbones = Registry("backbone family")
        self.backbone_names = Registry("backbone")  # built-in model.backbone names -> their family's name
        self._collected: set[str] = set()  # plugins whose registration hooks have run

    # -- loading

    def load_defaults(self) -> None:
        for module_name in DEFAULT_PLUGINS:
            self._load_module(module_name, PluginInfo(module_name, "builtin", "kit", kit_version))

    def load_entry_points(self) -> None:
        allowed = _allowed_packages()
        if allowed == set():
            return  # nothing may load: skip even the (cached) scan
        for ep in entry_points(ENTRY_POINT_GROUP):
            if allowed is not None and (ep.package or ep.name) not in allowed and ep.name not in allowed:
                continue
            info = PluginInfo(ep.name, "entry point", ep.package, ep.version)
            try:
                plugin = ep.load()
            except BaseException as exc:  # a broken plugin must not break kit, nor end it (sys.exit)
                _reraise_signals(exc)
                self._record_failure(info, f"import failed: {_described(exc)}")
                continue
            self._register(plugin, info)

    def load_project_plugins(self, specs: list[str], project_dir: Path) -> None:
        """Load the local plugins a project names (module names or .py paths)."""
        for spec in specs:
            info = PluginInfo(spec, "project")
            try:
                module = _import_local(spec, project_dir)
            except PluginError:
                raise
            except BaseException as exc:  # sys.exit() too: a plugin cannot end kit as if it had succeeded
                _reraise_signals(exc)
                raise PluginError(
                    f"Project plugin '{spec}' (from `plugins:` in kit.yaml) failed to import: {_described(exc)}\n"
                    + _user_frames(exc)
                ) from None
            self._register(module, info)

    def _load_module(self, module_name: str, info: PluginInfo) -> None:
        try:
            module = importlib.import_module(module_name)
        except BaseException as exc:
            _reraise_signals(exc)
            self._record_failure(info, f"import failed: {_described(exc)}")
            return
        self._register(module, info)

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        if self.pm.is_registered(plugin) or info.name in self.info:
            return
        self.pm.register(plugin, name=info.name)
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self.info[info.name] = info

    def _record_failure(self, info: PluginInfo, error: str) -> None:
        info.error = error
        self.info[info.name] = info

    # -- registration hooks

    def collect(self) -> None:
        """Run every registration hook, one plugin at a time, isolating failures."""
        pending = {name for name, _ in self.pm.list_name_plugin()} - self._collected
        if not pending:
            return
        self._register_each("register_input_kinds", self.input_kinds, _check_kind, pending)
        self._register_each("register_backbones", self.backbones, self._check_backbone, pending)
        self._register_each("register_tasks", self.tasks, _check_task, pending)
        self._register_each("register_data_sources", self.data_sources, _check_source, pending)
        self._collected |= pending

    def call_each(
        self,
        hook: str,
        register_for: Callable[[str], Callable[..., None]] | None = None,
        only: set[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, BaseException]:
        """Call `hook` on one plugin at a time, through pluggy's own hook calling (wrappers and tracing work).

        With `register_for`, each plugin gets `register=register_for(plugin_name)`, so whatever it
        registers is recorded against it. Returns the exceptions raised, by plugin name; a plugin
        that raises does not stop the others. `only` limits the call to those plugins.
        """
        names = [impl.plugin_name for impl in getattr(self.pm.hook, hook).get_hookimpls()]
        errors: dict[str, BaseException] = {}
        for name in names:
            if only is not None and name not in only:
                continue
            others = [self.pm.get_plugin(other) for other in names if other != name]
            arguments = {**kwargs, **({"register": register_for(name)} if register_for else {})}
            try:
                self.pm.subset_hook_caller(hook, remove_plugins=others)(**arguments)
            except BaseException as exc:  # a plugin's bug (even sys.exit) is reported against it
                _reraise_signals(exc)
                errors[name] = exc
        return errors

    def _register_each(
        self, hook: str, registry: Registry, check: Callable[..., tuple[str, Any]], only: set[str]
    ) -> None:
        def register_for(plugin: str) -> Callable[..., None]:
            def register(*args: Any) -> None:
                name, obj = check(plugin, *args)
                registry.add(name, obj, plugin)

            return register

        for plugin, exc in self.call_each(hook, register_for, only=only).items():
            self._note_error(
                plugin, str(exc) if isinstance(exc, PluginError) else f"{hook} {_described(exc, 'raised ')}"
            )

    def _check_backbone(self, plugin: str, family: Any) -> tuple[str, Any]:
        name, family = _check_backbone(plugin, family)
        for size in family.sizes:  # built-in names are unique across plugins, like family names
            self.backbone_names.add(size, name, plugin)
        return name, family

    def _note_error(self, plugin: str, message: str) -> None:
        info = self.info.get(plugin)
        if info is not None:
            info.error = message if not info.error else f"{info.error}; {message}"

    def check_project_plugins(self) -> None:
        """Raise the first registration error of a project's own plugin.

        A broken third-party plugin is recorded and skipped (`kit plugins`
        shows it), so one bad package cannot stop every project; a plugin the
        project itself names in `plugins:` must work, so its errors stop the run.
        """
        self.collect()
        for info in self.info.values():
            if info.origin == "project" and info.error:
                raise PluginError(
                    f"Project plugin '{info.name}' (from `plugins:` in kit.yaml) failed to register: {info.error}"
                )

    def add_commands(self, cli: Any) -> dict[str, BaseException]:
        """Let every plugin add its commands to the `kit` click group; returns the failures by plugin."""
        return self.call_each("register_commands", cli=cli)

    def add_plugin(self, plugin: Any, name: str, origin: str) -> None:
        """Register an already-imported plugin object (tests; `kit.testing.register_task_class`)."""
        self._register(plugin, PluginInfo(name, origin))

    def errors(self) -> list[PluginInfo]:
        return [info for info in self.info.values() if info.error]

    def task(self, name: str) -> Registered:
        self.collect()
        return self.tasks.get(name)

    def input_kind(self, name: str) -> Registered:
        self.collect()
        return self.input_kinds.get(name)

    def backbone_origins(self) -> dict[str, str]:
        """Every built-in `model.backbone` name with the plugin that registered it."""
        self.collect()
        return {name: item.plugin for name, item in self.backbone_names.items.items()}

    def backbone_for(self, reference: Any, kind: str) -> Registered:
        """The backbone family that builds `kind` inputs from `reference` (a `BackboneRef`, not auto)."""
        self.collect()
        if reference.form == "name":
            family = self.backbones.get(self.backbone_names.get(reference.name).obj)
            if kind not in family.obj.input_kinds:
                raise ConfigError(
                    f"model.backbone '{reference.name}' ({family.obj.name} family, from {family.plugin}) builds "
                    f"{', '.join(family.obj.input_kinds)} inputs, not {kind}. {self._families_for(kind)}"
                )
            return family
        found = [
            item for item in self.backbones.items.values() if kind in item.obj.input_kinds and _accepts(item, reference)
        ]
        if not found:
            raise ConfigError(
                f"No backbone family loads model.backbone {reference} for {kind} inputs. {self._families_for(kind)}"
            )
        if len(found) > 1:
            owners = " and ".join(f"'{item.obj.name}' ({item.plugin})" for item in found)
            raise PluginError(
                f"Backbone families {owners} both load {reference} for {kind} inputs; kit cannot choose. "
                f"Uninstall one of them, or limit what loads with KIT_LOAD_PLUGINS."
            )
        return found[0]

    def _families_for(self, kind: str) -> str:
        """What can build `kind`: built-in names and the families that load pretrained models, with origins."""
        families = {name: item for name, item in self.backbones.items.items() if kind in item.obj.input_kinds}
        names = [
            f"{size} ({item.plugin})"
            for size, item in sorted(self.backbone_names.items.items())
            if item.obj in families
        ]
        loaders = [f"{name} ({item.plugin})" for name, item in families.items() if item.obj.loads_pretrained()]
        text = f"Backbones for {kind} inputs: {', '.join(names) or 'none'}"
        return text + (f"; pretrained models load through {', '.join(loaders)}." if loaders else ".")


def _check_task(plugin: str, task_cls: Any) -> tuple[str, Any]:
    from kit.task import Task  # light module: no TensorFlow

    if not (isinstance(task_cls, type) and issubclass(task_cls, Task)):
        raise PluginError(f"Plugin '{plugin}' registered {task_cls!r} as a task; it must be a subclass of kit.Task.")
    name = getattr(task_cls, "name", "")
    if not name or not isinstance(name, str):
        raise PluginError(f"Plugin '{plugin}' registered task class {task_cls.__name__} without a `name`.")
    return name, task_cls


def _check_kind(plugin: str, kind_cls: Any) -> tuple[str, Any]:
    from kit.backbone import InputKind

    if not (isinstance(kind_cls, type) and issubclass(kind_cls, InputKind)):
        raise PluginError(
            f"Plugin '{plugin}' registered {kind_cls!r} as an input kind; it must subclass kit.InputKind."
        )
    if not kind_cls.name or not isinstance(kind_cls.name, str):
        raise PluginError(f"Plugin '{plugin}' registered input kind {kind_cls.__name__} without a `name`.")
    return kind_cls.name, kind_cls


def _check_backbone(plugin: str, family: Any) -> tuple[str, Any]:
    from kit.backbone import Backbone

    if not (isinstance(family, type) and issubclass(family, Backbone)):
        raise PluginError(f"Plugin '{plugin}' registered {family!r} as a backbone; it must subclass kit.Backbone.")
    name = getattr(family, "name", "")
    if not name or not isinstance(name, str):
        raise PluginError(f"Plugin '{plugin}' registered backbone family {family.__name__} without a `name`.")
    kinds = family.input_kinds
    if isinstance(kinds, str) or not kinds or not all(isinstance(k, str) and k for k in kinds):
        raise PluginError(f"Backbone family '{name}' (plugin '{plugin}') must list its input_kinds, e.g. ('text',).")
    if not isinstance(family.sizes, dict):
        raise PluginError(f"Backbone family '{name}' (plugin '{plugin}'): sizes must map names to settings.")
    return name, family


def _accepts(item: Registered, reference: Any) -> bool:
    """A family's `accepts`, with its bugs reported as the plugin's."""
    try:
        return bool(item.obj.accepts(reference))
    except Exception as exc:
        raise PluginError(
            f"Backbone family '{item.obj.name}' (plugin '{item.plugin}') failed deciding whether it loads "
            f"{reference}: {_one_line(exc)}"
        ) from None


def _check_source(plugin: str, scheme: Any, opener: Any = None) -> tuple[str, Any]:
    if not isinstance(scheme, str) or not scheme.isidentifier() or not callable(opener):
        raise PluginError(f"Plugin '{plugin}' must call register(scheme: str, open_source: callable), got {scheme!r}.")
    return scheme, opener


def _allowed_packages() -> set[str] | None:
    value = os.environ.get("KIT_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _import_local(spec: str, project_dir: Path) -> Any:
    if spec.endswith(".py"):
        path = Path(spec)
        path = path if path.is_absolute() else project_dir / path
        if not path.is_file():
            raise PluginError(f"Project plugin file {path} does not exist (named in `plugins:` in kit.yaml).")
        module_name = f"kit_project_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    return importlib.import_module(spec)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _described(exc: BaseException, raised: str = "") -> str:
    """What plugin code did, in one line: "called sys.exit(0)" or "[raised ]ValueError: ..."."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}), which a plugin must not do (it would end kit as if all went well)"
    return raised + _one_line(exc)


def _reraise_signals(exc: BaseException) -> None:
    """A real Ctrl-C or SIGTERM during `kit run` (kit.harness.run.SignalStop) still stops kit; plugin code's
    own KeyboardInterrupt, SystemExit or other BaseException is that plugin's failure."""
    if getattr(exc, "signal", None) is not None:
        raise exc


def _user_frames(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-1:]
    return "".join(f"  at {f.filename}, line {f.lineno}\n" for f in frames)


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugins: built-ins and entry points, loaded once."""
    global _plugins
    if _plugins is None:
        plugins = Plugins()
        plugins.load_defaults()
        plugins.load_entry_points()
        _plugins = plugins
    return _plugins


def reset_plugins() -> None:
    """Forget loaded plugins (tests use this for a fresh manager)."""
    global _plugins
    _plugins = None
