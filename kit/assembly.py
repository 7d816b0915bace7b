"""From a config to the pieces of a run: task, data plan, input kind, backbone family and fields.

Shared by training (which learns field statistics and the backbone's
vocabulary) and by using a trained run (which restores them from the run's
`kit_model.json`). Everything is looked up in the plugin registries: kit's
own tasks, kinds and families are plugins like any other. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kit.backbone import Backbone, InputKind
from kit.config import Config, check_inputs, validate_options
from kit.data.fields import Field
from kit.data.plan import DataPlan, check_columns
from kit.errors import ConfigError, PluginError
from kit.plugins import Plugins, Registered, get_plugins
from kit.references import BackboneRef, parse_reference
from kit.task import Task


@dataclass
class Pieces:
    """Everything needed to build the datasets and the model of one project.

    Attributes:
        task: the `kit.Task` instance, with its target fields.
        plugin: the plugin that registered the task.
        plan: which source feeds each split (None when restored from a run).
        kind: the `kit.InputKind` instance, with its feature fields.
        backbone: the `kit.Backbone` family instance that builds the kind.
        backbone_plugin: the plugin that registered that family.
    """

    task: Task
    plugin: str
    plan: DataPlan | None
    kind: InputKind
    backbone: Backbone
    backbone_plugin: str

    @property
    def targets(self) -> list[Field]:
        return self.task.fields

    @property
    def fields(self) -> list[Field]:
        return self.kind.fields + self.task.fields

    def check_example(self, values: list[Any]) -> None:
        """The task's check of one parsed row (`values` in the order of `fields`)."""
        split = len(self.kind.fields)
        features = {f.column: v for f, v in zip(self.kind.fields, values[:split])}
        targets = {f.column: v for f, v in zip(self.task.fields, values[split:])}
        self.task.check_example(features, targets)


def load_task(config: Config, plugins: Plugins | None = None) -> tuple[Task, str]:
    """The task named in the config, with its options validated, and its plugin's name."""
    plugins = plugins or get_plugins()
    plugins.check_project_plugins()
    registered = plugins.task(config.task)
    options = validate_options(registered.obj.Options, config.options, config.task, config.source_file)
    return registered.obj(config, options), registered.plugin


def data_plan(config: Config, plugins: Plugins | None = None, train_described: str = "data.train") -> DataPlan:
    """Which source feeds each split. `train_described` is how messages name the training source (`kit predict`
    and `kit eval --data` call theirs "The input": it came from the command line, not data.train)."""
    plugins = plugins or get_plugins()
    plugins.collect()
    schemes = {name: item.obj for name, item in plugins.data_sources.items.items()}
    return DataPlan(config.data, config.project_dir, config.seed, schemes, train_described)


def accepted_kinds(task: Task, plugins: Plugins) -> list[Registered]:
    """The registered kinds a task takes: those it names, then ("*") every other per-example kind."""
    plugins.collect()
    named = [name for name in task.input_kinds if name != "*"]
    accepted = [_kind(plugins, name, f"task '{task.name}' (input_kinds)") for name in named]
    if "*" in task.input_kinds:
        accepted += [
            item
            for name, item in sorted(plugins.input_kinds.items.items())
            if name not in named and item.obj.per_example
        ]
    return accepted


def choose_kind(config: Config, task: Task, columns: list[str], hint: str | None, plugins: Plugins) -> Registered:
    """The input kind: `data.inputs`, else the only one the task takes, else the one the data shows."""
    accepted = accepted_kinds(task, plugins)
    if config.data.inputs != "auto":
        chosen = _kind(plugins, config.data.inputs, "data.inputs")
        if chosen.name not in {item.name for item in accepted}:
            raise ConfigError(
                f"Task '{task.name}' does not take {chosen.name} inputs (it takes: "
                f"{', '.join(item.name for item in accepted)}). Set data.inputs to one of those, or choose another task."
            )
        return chosen
    if len(accepted) == 1:
        return accepted[0]
    found = [item for item in accepted if item.obj.detect(config, columns, hint)]
    if len(found) == 1:
        return found[0]
    if not found:
        found = [item for item in accepted if getattr(item.obj, "fallback", False)]
        if len(found) == 1:
            return found[0]
    names = ", ".join(item.name for item in (found or accepted))
    raise ConfigError(
        f"kit cannot tell which input kind this data is ({names} all fit its columns: {', '.join(columns)}). "
        f"Set data.inputs to one of {', '.join(item.name for item in accepted)}."
    )


def _kind(plugins: Plugins, name: str, where: str) -> Registered:
    try:
        return plugins.input_kind(name)
    except PluginError as exc:
        raise ConfigError(f"{where}: {exc}".replace("See `kit tasks`", "See `kit tasks --json`")) from None


def make_backbone(config: Config, kind: InputKind, plugins: Plugins) -> tuple[Backbone, str]:
    """The backbone family instance for `model.backbone` (the kind's default when `auto`) and its plugin."""
    reference = config.backbone_ref
    if reference.form == "auto":
        reference = parse_reference(kind.default_backbone, config.project_dir, plugins.backbone_origins())
    registered = plugins.backbone_for(reference, kind.name)
    return registered.obj(reference, kind, config), registered.plugin


def assemble(config: Config, plugins: Plugins | None = None) -> Pieces:
    """Task, data plan, input kind and backbone, with their columns checked against the training source."""
    plugins = plugins or get_plugins()
    task, plugin = load_task(config, plugins)
    plan = data_plan(config, plugins)
    source = plan.sources["train"]
    targets = task.setup_fields()
    check_columns(source, targets, lambda column: "data.target")
    columns = source.columns()
    kind = choose_kind(config, task, columns, source.kind_hint, plugins).obj(config)
    kind.setup(source, task.target_columns())
    check_inputs(config, task.target_columns(), kind.name)  # keys naming a target, with their file and line
    check_not_targets(kind, task)  # any kind's columns, plugins' included
    check_columns(source, kind.fields, kind.setting)
    backbone, backbone_plugin = make_backbone(config, kind, plugins)
    return Pieces(task, plugin, plan, kind, backbone, backbone_plugin)


def restore(config: Config, bundle: dict[str, Any], plugins: Plugins | None = None) -> Pieces:
    """The pieces of a trained run from its kit_model.json: task, input kind and backbone family, looked up
    among the installed plugins only (a run folder names them; it never brings code), with learned states."""
    plugins = plugins or get_plugins()
    plugins.collect()
    task_entry = _installed(plugins.tasks, bundle["task"], "task")
    task = task_entry.obj(config, validate_options(task_entry.obj.Options, config.options, config.task, None))
    task.setup_fields()
    _set_states(task.fields, bundle["targets"], "targets")
    kind = _installed(plugins.input_kinds, {"name": bundle["inputs"]["kind"], "plugin": bundle["inputs"].get("plugin")},
                      "input kind").obj(config)  # fmt: skip
    kind.load(bundle["inputs"], task.target_columns())
    _set_states(kind.fields, bundle["features"], "features")
    saved = bundle["backbone"]
    family = _installed(plugins.backbones, {"name": saved["family"], "plugin": saved.get("plugin")}, "backbone family")
    return Pieces(task, task_entry.plugin, None, kind, family.obj(config.backbone_ref, kind, config), family.plugin)


def saved_reference(bundle: dict[str, Any]) -> BackboneRef:
    """The backbone reference a run was trained with, as recorded (its folder need not exist here)."""
    saved = bundle["backbone"]
    return BackboneRef(str(saved["reference"]), str(saved.get("form", "name")), name=saved.get("name"))


class MissingPlugin(PluginError):
    """A trained run needs a task, input kind or backbone family that no installed plugin provides."""

    def __init__(self, what: str, name: str, plugin: str | None):
        self.what, self.name, self.plugin = what, name, plugin
        source = f" (it came from the plugin '{plugin}')" if plugin else ""
        super().__init__(
            f"The run was trained with the {what} '{name}', which no installed plugin provides{source}. Install "
            f"that plugin. kit never imports code named by a run folder."
        )


def _installed(registry: Any, wanted: Any, what: str) -> Registered:
    """The registered object a run needs, or a `MissingPlugin` naming the plugin to install."""
    name = wanted["name"] if isinstance(wanted, dict) else wanted
    plugin = wanted.get("plugin") if isinstance(wanted, dict) else None
    if name not in registry.items:
        raise MissingPlugin(what, name, plugin)
    return registry.items[name]


def _set_states(fields: list[Field], saved: list[dict[str, Any]], key: str) -> None:
    """Give each field its learned state; the saved columns must be the fields' own, in order."""
    expected, found = [f.column for f in fields], [item["column"] for item in saved]
    if expected != found:
        missing = [c for c in expected if c not in found] or ["none"]
        extra = [c for c in found if c not in expected] or ["none"]
        raise RestoreError(
            f"'{key}' lists {len(found)} columns where its config gives {len(expected)} (missing: "
            f"{', '.join(map(repr, missing))}; not expected: {', '.join(map(repr, extra))}; or in another order)"
        )
    for f, item in zip(fields, saved):
        try:
            f.set_state(item["state"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RestoreError(f"the learned state of {f.column!r} is unusable ({type(exc).__name__}: {exc})") from None


class RestoreError(ValueError):
    """kit_model.json does not fit the fields its config gives (the caller names the file)."""


def check_not_targets(kind: InputKind, task: Task) -> None:
    """Refuse a target column used as an input: the model would learn to copy the answer."""
    targets = set(task.target_columns())
    for f in kind.fields:
        if f.column in targets:
            raise ConfigError(
                f"Column '{f.column}' is both a target (data.target) and an input ({kind.setting(f.column)}): the "
                f"model would read the answer. Remove it from {kind.setting(f.column)}, or predict another column."
            )
