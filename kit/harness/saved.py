"""Using a trained run: load its model, evaluate, predict, export.

A run's `model/` folder holds `model.keras` (loaded with Keras safe mode) and
`kit_model.json` (task, input kind, learned field states, resolved config).
A run folder may come from someone else, so what is read from it is data,
never code (`kit.harness.runfiles`): the task's plugin must be installed or
named with --plugin on the command line; the plugins a saved config names are
never imported. Outputs are written whole or not at all (`kit.harness.outputs`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import numpy as np

from kit.data.pipeline import batched, examples
from kit.data.plan import DataPlan, check_columns, parse_row, report_text, scan
from kit.errors import ConfigError, DataError, ModelError, PluginError, UsageError
from kit.harness.outputs import enclosing_run, folder_replaced_when_complete, replaced_when_complete, shown
from kit.harness.runfiles import (
    BUNDLE_FILE,
    CONFIG_COPY,
    MODEL_DIR,
    MODEL_FILE,
    check_preset_files,
    confine_names,
    damaged,
    load_keras_model,
    model_folder,
    quoted,
    read_bundle,
    read_metrics,
    read_record,
    reading,
    run_file,
    saved_config,
    warn_if_unfinished,
)
from kit.harness.setup import data_plan, load_task, say
from kit.harness.trainer import keras_hub_backbone, split_metrics

__all__ = ["TrainedModel", "check_input", "export", "load_keras_model", "read_metrics", "write_predictions"]


# ------------------------------------------------------------------ the task's plugin


def restore_task(
    run_dir: Path, record: dict[str, Any], config: Any, meta: dict[str, Any], plugin_files: Sequence[str]
) -> Any:
    """The run's task, from an installed plugin or one named with --plugin; never from the run folder."""
    from kit.plugins import get_plugins

    plugins = get_plugins()
    if plugin_files:
        _load_named_plugins(plugins, plugin_files)
    plugins.collect()
    if config.task not in plugins.tasks.items and config.task not in plugins.tasks.conflicts:
        raise PluginError(_missing_plugin(run_dir, config.task, record, meta))
    try:
        task, _ = load_task(config, plugins)
    except ConfigError as exc:
        raise ModelError(f"The saved options of task '{config.task}' do not fit its installed plugin: {exc}") from None
    return task


def _load_named_plugins(plugins: Any, plugin_files: Sequence[str]) -> None:
    try:
        plugins.load_project_plugins(list(plugin_files), Path.cwd())
        plugins.check_project_plugins()
    except PluginError as exc:
        message = str(exc).replace("(from `plugins:` in kit.yaml)", "(from --plugin)")
        raise PluginError(message.replace("(named in `plugins:` in kit.yaml)", "(from --plugin)")) from None


def _missing_plugin(run_dir: Path, task: str, record: dict[str, Any], meta: dict[str, Any]) -> str:
    plugin, versions = record.get("task_plugin"), record.get("plugins")
    version = versions.get(plugin) if isinstance(versions, dict) and isinstance(plugin, str) else None
    made_by = f" (run.json: it came from the plugin {quoted(plugin)}{f' {quoted(version)}' if version else ''})"
    message = (
        f"{shown(run_dir)} was trained with the task {quoted(task)}, which no installed plugin provides"
        f"{made_by if plugin else ''}. Install that plugin (see `kit tasks`)"
    )
    files = meta["config"].get("plugins")
    if files:
        named = ", ".join(quoted(f) for f in files[:5]) if isinstance(files, list) else quoted(files)
        message += (
            f", or, if the task comes from a project's own plugin file ({named} in the run's config), pass "
            f"that file with --plugin FILE once you trust its code"
        )
    return message + ". kit never imports code named by a run folder."


# ------------------------------------------------------------------ the trained model


class TrainedModel:
    """A trained run's model with its task and inputs restored.

    Args:
        run_dir: the run directory.
        unsafe: allow model.keras to hold Python code (Lambda layers).
        plugins: plugin files or modules the user named (--plugin) for a task that is not installed.
        rows: the model is for predicting or evaluating rows (refuses generation runs).
    """

    def __init__(self, run_dir: Path, unsafe: bool = False, plugins: Sequence[str] = (), rows: bool = False):
        self.run_dir = Path(run_dir)
        self.record = read_record(self.run_dir)
        self.folder = model_folder(self.run_dir, self.record)
        bundle = self.folder / BUNDLE_FILE
        self.meta = read_bundle(self.run_dir, self.folder)
        if rows:
            refuse_generation(self.run_dir, self.meta)
        warn_if_unfinished(self.run_dir, self.record)
        self.config = saved_config(self.meta, bundle)
        self.task = restore_task(self.run_dir, self.record, self.config, self.meta, plugins)
        with reading(bundle):
            _restore_states(self.task.setup_fields(), self.meta["targets"], "targets", bundle)
            self.inputs = self._restore_inputs(bundle)
        self.model = load_keras_model(run_file(self.run_dir, Path(MODEL_DIR) / MODEL_FILE, ModelError), unsafe)
        check_model_fits(self)

    def _restore_inputs(self, bundle: Path) -> Any:
        from kit.inputs import make_inputs

        saved = self.meta["inputs"]
        confine_names(self.meta, self.folder, bundle)
        columns = saved.get("columns", [])
        sample = [{c["name"]: 0.0 if c["type"] == "number" else "" for c in columns}]
        inputs = make_inputs(self.config, saved["kind"], list(sample[0]), self.task.target_columns(), sample)
        if saved.get("preprocessor_dir"):
            check_preset_files(run_file(self.run_dir, Path(MODEL_DIR) / saved["preprocessor_dir"], ModelError))
        if saved["kind"] == "decoder":
            from kit.inputs import PRESET_DIR

            check_preset_files(run_file(self.run_dir, Path(MODEL_DIR) / PRESET_DIR, ModelError))
        with reading(self.folder):
            inputs.load(self.folder, saved)
        _restore_states(inputs.fields, self.meta["features"], "features", bundle)
        return inputs

    def plan_for(self, source: str, with_targets: bool) -> tuple[DataPlan, list[Any]]:
        """A one-split plan over `source`, checked like training data was."""
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
        try:
            plan = data_plan(self.config)
            split = "test" if "test" in plan.splits() else plan.splits()[-1]
            scan(plan, self.inputs.fields, "skip", learn=False)
            return next(iter(examples(plan, split, self.inputs.fields, []).batch(count)))
        except (DataError, ConfigError) as exc:
            raise DataError(
                f"kit export checks the exported model on examples of the run's own data (data.train in "
                f"{shown(self.run_dir / CONFIG_COPY)}), which cannot be read here: {exc}"
            ) from None


def _restore_states(fields: list[Any], saved: list[dict[str, Any]], key: str, path: Path) -> None:
    """Give each field its learned state; the saved columns must be the ones the config gives."""
    expected, found = [f.column for f in fields], [item["column"] for item in saved]
    if expected != found:
        missing = [c for c in expected if c not in found] or ["none"]
        extra = [c for c in found if c not in expected] or ["none"]
        raise damaged(
            path,
            f"'{key}' lists {len(found)} columns where its config gives {len(expected)} (missing: "
            f"{quoted(', '.join(missing))}; not expected: {quoted(', '.join(extra))}; or in another order)",
        )
    for f, item in zip(fields, saved):
        try:
            f.set_state(item["state"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise damaged(
                path, f"the learned state of {quoted(f.column)} is unusable ({type(exc).__name__}: {exc})"
            ) from None


def refuse_generation(run_dir: Path, meta: dict[str, Any]) -> None:
    """Predicting or evaluating rows makes no sense for a run that continues text."""
    if meta["inputs"]["kind"] == "decoder":
        raise UsageError(
            f"{shown(run_dir)} is a generation run (task {quoted(meta['task'])}): it continues text rather than "
            f'predicting rows of data. Use `kit generate {shown(run_dir)} "prompt"` (or --prompts FILE); its '
            f"validation and test perplexity are in `kit eval {shown(run_dir)}`."
        )


def check_model_fits(trained: TrainedModel) -> None:
    """model.keras must take the inputs kit_model.json describes and give the outputs its task expects.

    A model.keras copied from another run (other columns, other labels) would
    otherwise fail at the first batch, or silently pair outputs with the wrong labels.
    """
    kind = trained.meta["inputs"]["kind"]
    if kind == "decoder":
        return
    where = f"{shown(trained.folder / MODEL_FILE)} and {shown(trained.folder / BUNDLE_FILE)}"
    try:
        outputs = trained.model(trained.inputs.preprocess_batch(_blank_features(trained)), training=False)
    except Exception as exc:  # noqa: BLE001  any mismatch between the two files
        raise ModelError(
            f"{where} do not belong together: the model does not take the inputs the bundle describes "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}). Use an intact copy of the run."
        ) from None
    width, expected = _last_dimension(outputs), _head_width(trained)
    if width is not None and expected is not None and width != expected:
        raise ModelError(
            f"{where} do not belong together: the model gives {width} outputs per example but the task expects "
            f"{expected} (e.g. one per label). Use an intact copy of the run."
        )


def _blank_features(trained: TrainedModel) -> dict[str, Any]:
    """One example with a plain value in every input column, as tensors like tf.data gives them."""
    import tensorflow as tf

    features = {}
    for f in trained.inputs.fields:
        if f.dtype == "str" and trained.inputs.kind == "image":
            features[f.column] = tf.zeros((1, *trained.inputs.size, trained.inputs.channels), "float32")
        elif f.dtype == "str":
            features[f.column] = tf.constant(["a"])
        else:
            features[f.column] = tf.zeros((1,), "float32")
    return features


def _last_dimension(outputs: Any) -> int | None:
    if isinstance(outputs, (dict, list, tuple)):
        return None
    shape = getattr(outputs, "shape", ())
    return int(shape[-1]) if len(shape) >= 2 and shape[-1] is not None else None


def _head_width(trained: TrainedModel) -> int | None:
    """The output width the task's head has for the restored targets (None when it cannot tell)."""
    import keras

    try:
        head = trained.task.build_head(keras.Input((8,)))
    except Exception:  # noqa: BLE001  a plugin's head may need its real backbone; then there is nothing to compare
        return None
    return _last_dimension(head)


def _usable_lines(plan: DataPlan, fields: list[Any]) -> Iterator[int]:
    from kit.data.fields import BadValue

    for row in plan.rows("train"):
        try:
            parse_row(row, fields)
        except BadValue:
            continue
        yield row.line


def check_input(source: str) -> None:
    """INPUT / --data must be data, not a run directory or a model folder."""
    path = Path(source)
    if not path.exists():
        return
    real = path.resolve()
    run = enclosing_run(real)
    if run is None or not (real == run or _is_inside(real, run / MODEL_DIR)):
        return
    what = "a run directory" if real == run else "inside a run's model folder"
    raise UsageError(
        f"{shown(source)} is {what}, not data. Give the CSV/JSONL file or folder of examples as INPUT "
        f"(and the run as RUN_DIR)."
    )


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


# ------------------------------------------------------------------ writing predictions


def write_predictions(rows: Iterator[dict[str, Any]], output: Path | None) -> int:
    """Write predictions as JSON lines (stdout or .jsonl) or CSV (.csv); return the count.

    A file is written under a temporary name and renamed when complete
    (`kit.harness.outputs`): a failure or Ctrl-C leaves no half-written file.
    """
    if output is None:
        return _to_stdout(rows)
    with replaced_when_complete(output) as handle:
        if output.suffix.lower() == ".csv":
            return _write_csv(rows, handle)
        return _write_jsonl(rows, handle)


def _to_stdout(rows: Iterator[dict[str, Any]]) -> int:
    try:
        count = _write_jsonl(rows, sys.stdout)
        sys.stdout.flush()
        return count
    except BrokenPipeError:  # `kit predict ... | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _write_jsonl(rows: Iterator[dict[str, Any]], handle: IO[str]) -> int:
    count = 0
    for row in rows:
        handle.write(json.dumps(row) + "\n")
        count += 1
    return count


def _write_csv(rows: Iterator[dict[str, Any]], handle: IO[str]) -> int:
    writer, count = None, 0
    for row in rows:
        flat = _flatten(row)
        if writer is None:
            writer = csv.DictWriter(handle, fieldnames=list(flat))
            writer.writeheader()
        elif list(flat) != writer.fieldnames:
            raise PluginError(
                f"The task's predictions for line {row.get('line')} have other fields ({', '.join(flat)}) than the "
                f"first row's, so they do not fit one CSV table. Write JSON lines instead (-o predictions.jsonl)."
            )
        writer.writerow(flat)
        count += 1
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
    """Export a trained model and check that the reloaded copy predicts the same.

    The export is written into a temporary folder beside `destination`,
    checked, and renamed onto it: an interrupted or failed export leaves
    nothing, and the same command can simply be run again.
    """
    from kit.harness.outputs import check_export_destination

    destination = destination or trained.run_dir / "export" / fmt
    target = check_export_destination(destination, trained.run_dir)
    sample = trained.sample_features()
    made = _make_default_parent(trained, target)
    try:
        with folder_replaced_when_complete(target) as scratch:
            expected, actual = _write_export(trained, fmt, sample, scratch)
            _check_reproduced(expected, actual, destination)
            record = {"format": fmt, "checked_examples": int(len(expected)), "run": str(trained.run_dir)}
            record["run_status"] = trained.record.get("status")
            (scratch / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        if made:
            shutil.rmtree(made, ignore_errors=True)
        raise
    return destination


def _make_default_parent(trained: TrainedModel, target: Path) -> Path | None:
    """Create RUN_DIR/export for the default destination; return it when it was created here."""
    parent = trained.run_dir.resolve() / "export"
    if target.parent != parent or parent.exists():
        return None
    parent.mkdir()
    return parent


def _write_export(trained: TrainedModel, fmt: str, sample: dict[str, Any], folder: Path) -> tuple[Any, Any]:
    """Write the export into `folder`; return (the run's outputs, the reloaded export's outputs) on `sample`."""
    if fmt == "preset":
        return _export_preset(trained, sample, folder)
    expected = _served_outputs(trained, sample)
    if fmt == "keras":
        shutil.copytree(trained.folder, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.tmp*"))
        reloaded = TrainedModel.__new__(TrainedModel)
        reloaded.__dict__.update(trained.__dict__)
        reloaded.model = load_keras_model(folder / MODEL_FILE)
        return expected, _served_outputs(reloaded, sample)
    return expected, _export_saved_model(trained, sample, folder)


def _check_reproduced(expected: Any, actual: Any, destination: Path) -> None:
    if not np.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        raise ModelError(
            f"The exported model for {shown(destination)} does not reproduce the run's predictions (max diff "
            f"{float(np.max(np.abs(expected - actual)))}); nothing was written. Please report this as a bug."
        )


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
            f"The {trained.inputs.kind} model of {shown(trained.run_dir)} has no keras-hub backbone, so there is no "
            f"preset to write. Use --format keras or --format saved_model."
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
