"""Turning a config into the pieces of a run: task, data plan, inputs, fields.

Shared by training (which learns field statistics) and by eval/predict on a
saved model (which restores them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from kit.config import Config, check_inputs, check_monitor, validate_options
from kit.data.fields import Field
from kit.data.plan import DataPlan, check_columns
from kit.errors import ConfigError
from kit.plugins import Plugins, get_plugins
from kit.task import Task


def load_task(config: Config, plugins: Plugins | None = None) -> tuple[Task, str]:
    """Instantiate the task named in the config; return it and its plugin's name."""
    plugins = plugins or get_plugins()
    if config.plugins:
        plugins.load_project_plugins(config.plugins, config.project_dir)
        plugins.check_project_plugins()
    registered = plugins.task(config.task)
    task_cls = registered.obj
    options = validate_options(task_cls.Options, config.options, config.task, config.source_file, config.origin)
    return task_cls(config, options), registered.plugin


def data_plan(config: Config, plugins: Plugins | None = None, train_described: str = "data.train") -> DataPlan:
    plugins = plugins or get_plugins()
    plugins.collect()
    schemes = {name: item.obj for name, item in plugins.data_sources.items.items()}
    return DataPlan(config.data, config.project_dir, config.seed, schemes, train_described)


@dataclass
class Pieces:
    """Everything needed to build datasets and the model of one project."""

    task: Task
    plugin: str
    plan: DataPlan
    inputs: Any  # kit.inputs.Inputs
    targets: list[Field]

    @property
    def fields(self) -> list[Field]:
        return self.inputs.fields + self.targets


def assemble(config: Config) -> Pieces:
    """Task + data plan + inputs, with columns checked against the training source."""
    from kit.inputs import guess_kind, make_inputs

    task, plugin = load_task(config)
    plan = data_plan(config)
    train_source = plan.sources["train"]
    targets = task.setup_fields()
    setting = lambda column: "data.target" if column in task.target_columns() else "data"  # noqa: E731
    check_columns(train_source, targets, setting)
    columns = train_source.columns()
    kind = guess_kind(config, train_source.kind_hint, columns)
    if kind not in task.input_kinds:
        raise ConfigError(
            f"Task '{task.name}' does not take {kind} inputs (it takes: {', '.join(task.input_kinds)}). "
            f"Set data.inputs, or choose another task."
        )
    check_inputs(config, task.target_columns(), kind)  # no target among the inputs
    check_monitor(config, task)  # before training, not at the first epoch's end
    sample = (row.values for row in train_source.rows())  # tabular columns are typed from every row
    inputs = make_inputs(config, task.input_kind(kind), columns, task.target_columns(), sample)
    feature_setting = {"text": "data.text_column", "image": "data.image_column"}.get(kind, "data.features")
    check_columns(train_source, inputs.fields, lambda column: feature_setting)
    return Pieces(task, plugin, plan, inputs, targets)


def say(message: str) -> None:
    """Progress messages go to stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)
