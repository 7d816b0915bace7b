"""Using a trained run: load its model, evaluate it on other data, predict. Public API; no training code.

A run's `model/` folder holds `model.keras` (loaded with Keras safe mode) and
`kit_model.json` (the task, input kind and backbone family by name, their
learned states, the resolved config). The task, kind and family are looked
up among the installed plugins: a run folder names what it needs and never
brings code.

Example:
    >>> trained = TrainedModel("runs/run-1")
    >>> for prediction in trained.predict_rows("new_rows.csv"):
    ...     print(prediction)
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kit.assembly import Pieces, data_plan, restore, saved_reference
from kit.config import build_config
from kit.console import say
from kit.data.pipeline import examples
from kit.data.plan import DataPlan, check_columns, parse_row, report_text, scan
from kit.errors import ModelError, PluginError, RunDirError
from kit.evaluation import split_metrics
from kit.rundir import RunDir


class TrainedModel:
    """A trained run's model with its task, input kind and backbone family restored.

    Attributes:
        run: the run's `RunDir`; config: its resolved `Config`; pieces: task, kind, backbone;
        model: the Keras model from model.keras.
    """

    def __init__(self, run_dir: str | Path, unsafe: bool = False):
        self.run = RunDir(run_dir)
        self.run_dir = self.run.path
        self.bundle = read_bundle(self.run)
        self.config = build_config(self.bundle["config"], reference=saved_reference(self.bundle))
        self.pieces: Pieces = restore(self.config, self.bundle)
        self.pieces.backbone.load(self.run.model_dir, self.bundle["backbone"])
        self.model = load_keras_model(self.run.model_file, unsafe)

    @property
    def task(self) -> Any:
        return self.pieces.task

    @property
    def kind(self) -> Any:
        return self.pieces.kind

    @property
    def backbone(self) -> Any:
        return self.pieces.backbone

    def plan_for(self, source: str, with_targets: bool) -> tuple[DataPlan, list[Any]]:
        """A one-split plan over `source` (a path relative to the working folder, or a scheme)."""
        data = dataclasses.replace(
            self.config.data, train=source, validation=None, test=None, validation_fraction=0.0, test_fraction=0.0
        )
        config = dataclasses.replace(self.config, data=data)
        config.source_file = Path.cwd() / "kit.yaml"  # relative paths on the command line mean the cwd
        plan = data_plan(config)
        fields = self.kind.fields + (self.task.fields if with_targets else [])
        role = {f.column: "a target" for f in self.task.fields}
        check_columns(plan.sources["train"], fields, lambda column: role.get(column, "an input of this model"))
        return plan, fields

    def evaluate(self, source: str) -> dict[str, dict[str, float]]:
        """Metrics on labelled data from `source` (a path or scheme), keyed "data"."""
        plan, fields = self.plan_for(source, with_targets=True)
        check = self.pieces.check_example
        reports = scan(plan, fields, self.config.data.bad_rows, learn=False, check=check)
        say(report_text({"data": reports["train"]}))
        stream = examples(plan, "train", self.kind.fields, self.task.fields, reports["train"].rows, check)
        reshaped = self.task.prepare(stream, self.backbone, "data")
        if reshaped is None:
            reshaped = stream.map(lambda x, y: (self.backbone.preprocess(x), y))
        return {"data": split_metrics(self.model, self.task, reshaped.batch(self.config.data.batch_size), None, "data")}

    def predict_rows(self, source: str) -> Iterator[dict[str, Any]]:
        """Predictions for every usable row of `source`, each with its line number."""
        plan, fields = self.plan_for(source, with_targets=False)
        reports = scan(plan, fields, self.config.data.bad_rows, learn=False)
        if reports["train"].bad:
            say(report_text(reports))
        lines = _usable_lines(plan, fields)
        raw = examples(plan, "train", self.kind.fields, [], reports["train"].rows)
        batches = raw.map(lambda x: (self.backbone.preprocess(x), x)).batch(self.config.data.batch_size)
        for inputs, features in batches:
            outputs = np.asarray(self.model.predict_on_batch(inputs))
            for prediction in self.predictions(outputs, {k: v.numpy() for k, v in features.items()}):
                yield {"line": next(lines), **prediction}

    def predictions(self, outputs: np.ndarray, features: dict[str, Any]) -> list[dict[str, Any]]:
        """The task's predictions for a batch, checked to be one dict per example."""
        predictions = self.task.predictions
        wants_features = "features" in inspect.signature(predictions).parameters
        found = predictions(outputs, features) if wants_features else predictions(outputs)
        for prediction in found:
            if not isinstance(prediction, dict):
                raise PluginError(
                    f"Task '{self.task.name}': predictions() must return one dict per example, "
                    f"got {type(prediction).__name__}. Fix the task's plugin."
                )
        return found

    def sample_features(self, count: int = 16) -> dict[str, Any]:
        """A small batch of raw features from the run's test (or validation) data."""
        plan = data_plan(self.config)
        split = "test" if "test" in plan.splits() else plan.splits()[-1]
        scan(plan, self.kind.fields, "skip", learn=False)
        return next(iter(examples(plan, split, self.kind.fields, []).batch(count)))


def read_bundle(run: RunDir) -> dict[str, Any]:
    """A finished run's kit_model.json, or a clear error about what is missing or damaged."""
    if not run.path.is_dir():
        raise RunDirError(f"No run directory at {run.path}. Pass a folder written by `kit run` (e.g. runs/run-1).")
    record = run.read_record()
    if record is None:
        raise RunDirError(f"{run.path} is not a kit run directory (no readable {run.RECORD}).")
    if not run.bundle_file.is_file():
        raise RunDirError(
            f"{run.path} has no trained model yet (status: {record.get('status')}). Finish it with `kit run` first."
        )
    try:
        bundle = json.loads(run.bundle_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{run.bundle_file} is damaged ({type(exc).__name__}); the run cannot be used.") from None
    if not isinstance(bundle, dict) or bundle.get("format") != 2:
        raise RunDirError(
            f"{run.bundle_file} was written by another version of kit (format {bundle.get('format', 1) if isinstance(bundle, dict) else '?'}). "
            f"Train the run again with this version (`kit run {run.path / run.CONFIG}`)."
        )
    return bundle


def _usable_lines(plan: DataPlan, fields: list[Any]) -> Iterator[int]:
    from kit.data.fields import BadValue

    for row in plan.rows("train"):
        try:
            parse_row(row, fields)
        except BadValue:
            continue
        yield row.line


def load_keras_model(path: Path, unsafe: bool = False) -> Any:
    """Load a `.keras` file in safe mode unless `unsafe` is explicitly requested."""
    import keras

    from kit.compat import fix_keras_hub

    fix_keras_hub()
    try:
        # compile=False: inference needs no optimizer state (resuming uses the run's backup/).
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise ModelError(
                f"{path} needs unsafe deserialisation (it contains Python code, e.g. a Lambda layer). "
                f"Load it only if you trust its author, with --unsafe."
            ) from None
        raise ModelError(f"Cannot load {path}: {exc}") from None
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc}") from None


def write_predictions(rows: Iterator[dict[str, Any]], output: Path | None) -> int:
    """Write predictions as JSON lines (stdout or .jsonl) or CSV (.csv); return the count."""
    count = 0
    if output is not None and output.suffix.lower() == ".csv":
        with open(output, "w", newline="", encoding="utf-8") as handle:
            writer = None
            for row in rows:
                flat = _flatten(row)
                if writer is None:
                    writer = csv.DictWriter(handle, fieldnames=list(flat))
                    writer.writeheader()
                writer.writerow(flat)
                count += 1
        return count
    handle = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
            count += 1
    finally:
        if output:
            handle.close()
    return count


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
