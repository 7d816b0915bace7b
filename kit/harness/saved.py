"""Using a trained run: load its model, evaluate, predict, export.

A run's `model/` folder holds `model.keras` (loaded with Keras safe mode) and
`kit_model.json` (task, input kind, learned field states, resolved config).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kit.config import build_config
from kit.data.pipeline import batched, examples
from kit.data.plan import DataPlan, check_columns, parse_row, report_text, scan
from kit.errors import ModelError, PluginError
from kit.harness.rundir import require_run_dir, write_json_atomic
from kit.harness.setup import data_plan, load_task, say
from kit.harness.trainer import BUNDLE_FILE, MODEL_FILE, keras_hub_backbone, split_metrics


class TrainedModel:
    """A trained run's model with its task and inputs restored."""

    def __init__(self, run_dir: Path, unsafe: bool = False):
        from kit.inputs import make_inputs

        self.run_dir = Path(run_dir)
        require_run_dir(self.run_dir)
        self.folder = self.run_dir / "model"
        self.meta = json.loads((self.folder / BUNDLE_FILE).read_text(encoding="utf-8"))
        self.config = build_config(self.meta["config"])
        self.task, _ = load_task(self.config)
        self.task.setup_fields()
        for f, saved in zip(self.task.fields, self.meta["targets"]):
            f.set_state(saved["state"])
        kind = self.meta["inputs"]["kind"]
        sample = [{c["name"]: 0.0 if c["type"] == "number" else "" for c in self.meta["inputs"].get("columns", [])}]
        self.inputs = make_inputs(self.config, kind, list(sample[0]), self.task.target_columns(), sample)
        self.inputs.load(self.folder, self.meta["inputs"])
        for f, saved in zip(self.inputs.fields, self.meta["features"]):
            f.set_state(saved["state"])
        self.model = load_keras_model(self.folder / MODEL_FILE, unsafe)

    def plan_for(self, source: str, with_targets: bool) -> tuple[DataPlan, list[Any]]:
        """A one-split plan over `source`, checked like training data was."""
        import dataclasses

        data = dataclasses.replace(
            self.config.data, train=source, validation=None, test=None, validation_fraction=0.0, test_fraction=0.0
        )
        config = dataclasses.replace(self.config, data=data)
        config.source_file = Path.cwd() / "kit.yaml"  # relative paths on the command line mean the cwd
        plan = data_plan(config, train_described="The input")  # not "data.train": it came from the command line
        fields = self.inputs.fields + (self.task.fields if with_targets else [])
        role = {f.column: "a target" for f in self.task.fields}
        check_columns(plan.sources["train"], fields, lambda column: role.get(column, "an input of this model"))
        return plan, fields

    def evaluate(self, source: str) -> dict[str, dict[str, float]]:
        """Metrics on labelled data from `source` (a path or scheme), keyed "data"."""
        plan, fields = self.plan_for(source, with_targets=True)
        reports = scan(plan, fields, self.config.data.bad_rows, learn=False)
        say(report_text({"data": reports["train"]}))
        dataset = self.batches(examples(plan, "train", self.inputs.fields, self.task.fields, reports["train"].rows))
        return {"data": split_metrics(self.model, self.task, dataset, None, "data")}

    def batches(self, dataset: Any) -> Any:
        """Preprocess and batch unbatched examples for inference (no shuffling)."""
        preprocess = None
        if self.inputs.has_preprocessing():
            if isinstance(dataset.element_spec, tuple) and len(dataset.element_spec) == 2:
                preprocess = lambda x, y: (self.inputs.preprocess(x), y)  # noqa: E731
            else:
                preprocess = self.inputs.preprocess
        return batched(dataset, preprocess, self.config.data.batch_size, training=False, seed=0, shuffle_buffer=1)

    def predict_rows(self, source: str) -> Iterator[dict[str, Any]]:
        """Predictions for every usable row of `source`, each with its line number."""
        plan, fields = self.plan_for(source, with_targets=False)
        reports = scan(plan, fields, self.config.data.bad_rows, learn=False)
        if reports["train"].bad:
            say(report_text(reports))
        lines = _usable_lines(plan, fields)
        unbatched = examples(plan, "train", self.inputs.fields, [], reports["train"].rows)
        for batch in self.batches(unbatched):
            outputs = np.asarray(self.model.predict_on_batch(batch))
            for prediction in self.task.predictions(outputs):
                if not isinstance(prediction, dict):
                    raise PluginError(
                        f"Task '{self.task.name}': predictions() must return one dict per example, "
                        f"got {type(prediction).__name__}. Fix the task's plugin."
                    )
                yield {"line": next(lines), **prediction}

    def sample_features(self, count: int = 16) -> dict[str, Any]:
        """A small batch of raw features from the run's test (or validation) data."""
        plan = data_plan(self.config)
        split = "test" if "test" in plan.splits() else plan.splits()[-1]
        scan(plan, self.inputs.fields, "skip", learn=False)
        return next(iter(examples(plan, split, self.inputs.fields, []).batch(count)))


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

    import kit.harness.optim  # noqa: F401  registers kit's serialisable classes
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


# ------------------------------------------------------------------ export


def export(trained: TrainedModel, fmt: str, destination: Path | None) -> Path:
    """Export a trained model and check that the reloaded copy predicts the same."""
    destination = destination or trained.run_dir / "export" / fmt
    if destination.exists() and any(destination.iterdir()):
        raise ModelError(
            f"{destination} already exists and is not empty; kit will not overwrite it. Pass --output DIR."
        )
    sample = trained.sample_features()
    expected = _served_outputs(trained, sample)
    if fmt == "preset":
        expected, actual = _export_preset(trained, sample, destination)
    elif fmt == "keras":
        shutil.copytree(trained.folder, destination, dirs_exist_ok=True)
        reloaded = TrainedModel.__new__(TrainedModel)
        reloaded.__dict__.update(trained.__dict__)
        reloaded.model = load_keras_model(destination / MODEL_FILE)
        actual = _served_outputs(reloaded, sample)
    else:
        actual = _export_saved_model(trained, sample, destination)
    if not np.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        raise ModelError(
            f"The exported model in {destination} does not reproduce the run's predictions (max diff "
            f"{float(np.max(np.abs(expected - actual)))}). Please report this as a bug."
        )
    write_json_atomic(
        destination / "export.json",
        {"format": fmt, "checked_examples": int(len(expected)), "run": str(trained.run_dir)},
    )
    return destination


def _served_outputs(trained: TrainedModel, features: dict[str, Any]) -> np.ndarray:
    x = trained.inputs.preprocess_batch(features)
    return np.asarray(trained.task.postprocess(trained.model(x, training=False)))


def _export_preset(trained: TrainedModel, sample: dict[str, Any], destination: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write a keras-hub preset; return (run's outputs, reloaded preset's outputs) on `sample`.

    A generation run's whole causal LM (with its tokenizer) becomes the preset;
    for other text runs it is the fine-tuned backbone and preprocessor (the
    task head is kit's, not a keras-hub class), compared on backbone outputs.
    """
    import keras_hub

    model = trained.model
    x = trained.inputs.preprocess_batch(sample)
    if isinstance(model, keras_hub.models.Task):
        model.save_to_preset(str(destination))
        reloaded = type(model).from_preset(str(destination))
        return np.asarray(model(x)), np.asarray(reloaded(x))
    backbone = keras_hub_backbone(model)
    if backbone is None:
        raise ModelError(
            f"The {trained.inputs.kind} model of {trained.run_dir} has no keras-hub backbone, so there is no preset "
            f"to write. Use --format keras or --format saved_model."
        )
    backbone.save_to_preset(str(destination))
    trained.inputs.preprocessor().save_to_preset(str(destination))
    reloaded = keras_hub.models.Backbone.from_preset(str(destination))
    features = {name: x[name] for name in backbone.input}
    return _first_output(backbone(features)), _first_output(reloaded(features))


def _first_output(outputs: Any) -> np.ndarray:
    if isinstance(outputs, dict):
        outputs = outputs.get("sequence_output", next(iter(outputs.values())))
    return np.asarray(outputs)


def _export_saved_model(trained: TrainedModel, sample: dict[str, Any], destination: Path) -> np.ndarray:
    import tensorflow as tf

    inputs, model, task = trained.inputs, trained.model, trained.task
    signature = {k: tf.TensorSpec([None, *v.shape[1:]], v.dtype, name=k.replace(" ", "_")) for k, v in sample.items()}

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.preprocessor = getattr(inputs, "_preprocessor", None)

        @tf.function(input_signature=[signature])
        def serve(self, features: dict[str, Any]) -> dict[str, Any]:
            x = inputs.preprocess_batch(features)
            return {"outputs": task.postprocess(self.model(x, training=False))}

    module = Serving()
    tf.saved_model.save(module, str(destination), signatures={"serving_default": module.serve})
    if inputs.kind == "text":
        import tensorflow_text  # noqa: F401  registers the tokenizer ops the SavedModel uses
    reloaded = tf.saved_model.load(str(destination))
    return np.asarray(
        reloaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in sample.items()})["outputs"]
    )
