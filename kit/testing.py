"""Testing helpers for task plugins, shipped as a pytest plugin (`-p kit.testing`, auto-loaded).

`check_task` runs a task type through kit's whole path on tiny data -- build,
train a step, evaluate, save, reload in Keras safe mode, predict -- and checks
the task contract on the way. Fixtures give each test a fresh plugin manager.

Example::

    from kit.testing import check_task

    def test_my_task(tmp_path):
        rows = [{"text": "good film", "label": "pos"}, {"text": "dull", "label": "neg"}] * 20
        result = check_task(MyTask, rows, tmp_path)
        assert result.metrics["test"]["accuracy"] >= 0
"""

from __future__ import annotations

import csv
import json
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import kit
from kit.plugins import get_plugins, reset_plugins
from kit.rundir import RunDir


@dataclass
class TaskCheck:
    """What `check_task` produced: the run directory, final metrics and predictions."""

    run_dir: Path
    metrics: dict[str, dict[str, float]]
    predictions: list[dict[str, Any]]


def register_plugin(module: Any, name: str | None = None) -> None:
    """Load a plugin module (input kinds, backbone families, data sources...) in this process, as an
    installed plugin would be. Does nothing when it is loaded already."""
    plugins = get_plugins()
    name = name or getattr(module, "__name__", repr(module))
    if name not in plugins.info:
        plugins.add_plugin(module, name, "test")


def register_task_class(task_class: type[kit.Task]) -> None:
    """Make `task_class` available to kit in this process, as an installed plugin would.

    Does nothing when an installed plugin already registers this very class.
    """
    plugins = get_plugins()
    plugins.collect()
    existing = plugins.tasks.items.get(task_class.name)
    if existing is not None and existing.obj is task_class:
        return
    module = types.ModuleType(f"kit_testing_{task_class.name}")

    @kit.hookimpl
    def register_tasks(register: Any) -> None:
        register(task_class)

    module.register_tasks = register_tasks  # type: ignore[attr-defined]
    plugins.add_plugin(module, module.__name__, "test")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as CSV (flat values) or JSON lines (anything else), by `path`'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def check_task(
    task_class: type[kit.Task],
    rows: list[dict[str, Any]],
    tmp_path: Path,
    *,
    target: list[str] | str | None = None,
    config: dict[str, Any] | None = None,
    register: bool = True,
    plugins: list[Any] = (),  # type: ignore[assignment]
) -> TaskCheck:
    """Run `task_class` through build -> train -> evaluate -> save/reload -> predict.

    Args:
        task_class: the `kit.Task` subclass under test.
        rows: example rows (dicts of column -> value), at least 20; a fifth is
            held out for validation and test each.
        tmp_path: a scratch folder (pytest's `tmp_path`).
        target: target column(s); default: the task's `default_target`.
        config: extra `kit.yaml` settings, merged over small, fast defaults.
        register: register the class as a plugin first (False when it is
            already installed through an entry point).
        plugins: plugin modules to load first, e.g. one registering the input kind
            or backbone family the task is checked with.

    Returns:
        A `TaskCheck` with the run directory, metrics and predictions.

    Raises:
        AssertionError: naming the part of the contract that is broken.
    """
    from kit.config import build_config
    from kit.harness.run import train
    from kit.inference import TrainedModel

    _check_class(task_class)
    assert len(rows) >= 20, "check_task needs at least 20 rows (a fifth each goes to validation and test)"
    for module in plugins:
        register_plugin(module)
    if register:
        register_task_class(task_class)
    data_file = write_rows(tmp_path / "data.jsonl", rows)
    settings = _merge(_fast_settings(task_class, data_file, target), config or {})
    (tmp_path / "kit.yaml").write_text(json.dumps(settings), encoding="utf-8")
    cfg = build_config(settings)
    cfg.source_file = tmp_path / "kit.yaml"
    run_dir = train(cfg, tmp_path / "run", argv=["check_task"])
    metrics = json.loads(RunDir(run_dir).metrics_file.read_text(encoding="utf-8"))
    _check_metrics(metrics)
    trained = TrainedModel(run_dir)  # reloads model.keras in safe mode
    predictions = list(trained.predict_rows(str(data_file)))
    _check_predictions(predictions, len(rows))
    _check_keras_objects(trained.task)
    return TaskCheck(run_dir, metrics, predictions)


def _fast_settings(task_class: type[kit.Task], data_file: Path, target: Any) -> dict[str, Any]:
    return {
        "task": task_class.name,
        "data": {
            "train": str(data_file),
            "target": target if target is not None else list(task_class.default_target),
            "validation_fraction": 0.2,
            "test_fraction": 0.2,
            "batch_size": 8,
        },
        "model": {"sequence_length": 16, "vocabulary_size": 200, "hidden_units": [16]},
        "train": {"epochs": 2, "verbose": 0},
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def _check_class(task_class: type[kit.Task]) -> None:
    assert isinstance(task_class, type) and issubclass(task_class, kit.Task), (
        f"{task_class!r} is not a kit.Task subclass"
    )
    assert task_class.name and isinstance(task_class.name, str), (
        f"{task_class.__name__}.name must be a non-empty string"
    )
    assert task_class.description, f"{task_class.__name__}.description is empty (kit tasks shows it)"
    kinds = get_plugins()
    kinds.collect()
    unknown = [k for k in task_class.input_kinds if k != "*" and k not in kinds.input_kinds.items]
    assert not unknown, f"input_kinds {unknown} are not registered by any loaded plugin (see `kit tasks --json`)"


def _check_metrics(metrics: dict[str, Any]) -> None:
    assert metrics, "the run wrote no final metrics"
    for split, values in metrics.items():
        for name, value in values.items():
            assert isinstance(name, str) and isinstance(value, (int, float)), (
                f"metric {split}/{name} is not a number: {value!r}"
            )
        assert math.isfinite(values["loss"]), f"the {split} loss is not finite"


def _check_predictions(predictions: list[dict[str, Any]], rows: int) -> None:
    assert len(predictions) == rows, f"predict returned {len(predictions)} predictions for {rows} rows"
    for prediction in predictions:
        assert isinstance(prediction, dict), f"a prediction must be a dict, got {type(prediction).__name__}"
        json.dumps(prediction)  # must be JSON-able: kit predict writes JSON lines


def _check_keras_objects(task: kit.Task) -> None:
    import keras

    loss = task.loss()
    if not isinstance(loss, str):
        assert isinstance(loss, keras.losses.Loss), f"loss() must return a keras.losses.Loss or a name, got {loss!r}"
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss), "the loss does not survive Keras serialisation"
    for metric in task.metrics():
        name = metric if isinstance(metric, str) else getattr(metric, "name", None)
        assert isinstance(name, str) and name, f"metric {metric!r} has no name"


@pytest.fixture
def kit_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh plugin manager for one test (built-ins plus installed plugins)."""
    reset_plugins()
    yield get_plugins()
    reset_plugins()


@pytest.fixture
def kit_project(tmp_path: Path) -> Any:
    """A factory: `kit_project(rows, task=..., **sections)` writes a project folder and returns it."""

    def make(rows: list[dict[str, Any]], task: str, **sections: Any) -> Path:
        data = write_rows(tmp_path / "data" / "train.csv", rows)
        settings = {"task": task, "data": {"train": str(data), **sections.pop("data", {})}, **sections}
        (tmp_path / "kit.yaml").write_text(json.dumps(settings), encoding="utf-8")
        return tmp_path

    return make
