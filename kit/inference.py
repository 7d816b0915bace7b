"""Using a trained run: load its model, evaluate it on other data, predict. Public API; no training code.

A run's `model/` folder holds `model.keras` (loaded with Keras safe mode) and
`kit_model.json` (the task, input kind and backbone family by name, their
learned states, the resolved config). A run folder may come from someone else,
so what is read from it is data, never code (`kit.runfiles`): the task, kind
and family are looked up among the installed plugins (or a plugin file the
user names with --plugin); the plugins a saved config names are never imported.

Example:
    >>> trained = TrainedModel("runs/run-1")
    >>> for prediction in trained.predict_rows("new_rows.csv"):
    ...     print(prediction)
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import inspect
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import numpy as np

from kit.assembly import MissingPlugin, Pieces, data_plan, restore, saved_reference
from kit.config import dotted_keys
from kit.console import say
from kit.data.pipeline import examples
from kit.data.plan import DataPlan, check_columns, parse_row, report_text, scan
from kit.errors import ConfigError, DataError, ModelError, PluginError, UsageError
from kit.evaluation import split_metrics
from kit.outputs import enclosing_run, replaced_when_complete, shown
from kit.rundir import RunDir
from kit.runfiles import (
    check_keras_archive,
    check_preset_files,
    confine_names,
    load_keras_model,
    model_folder,
    quoted,
    read_bundle,
    read_metrics,
    read_record,
    reading,
    saved_config,
    warn_if_unfinished,
)

__all__ = ["TrainedModel", "check_input", "load_keras_model", "read_metrics", "write_predictions"]


class TrainedModel:
    """A trained run's model with its task, input kind and backbone family restored.

    Args:
        run_dir: the run directory.
        unsafe: allow model.keras to hold Python code (Lambda layers).
        plugins: plugin files or modules the user named (--plugin) for a task, kind or family
            that is not installed.
        predicting: for `kit predict`: a task that does not predict rows (generation) says what to
            use instead before the model is loaded.

    Attributes:
        run: the run's `RunDir`; record: its run.json; bundle: its kit_model.json; config: its
        resolved `Config`; pieces: task, kind, backbone family; model: the Keras model.
    """

    def __init__(
        self, run_dir: str | Path, unsafe: bool = False, plugins: Sequence[str] = (), predicting: bool = False
    ):
        self.run = RunDir(run_dir)
        self.run_dir = self.run.path
        self.record = read_record(self.run_dir)
        self.folder = model_folder(self.run_dir, self.record)
        self.bundle = read_bundle(self.run_dir, self.folder)
        warn_if_unfinished(self.run_dir, self.record)
        confine_names(self.bundle, self.folder, self.run.bundle_file)
        self.config = saved_config(self.bundle, self.run.bundle_file, saved_reference(self.bundle))
        if predicting:
            refuse_unpredictable(self.bundle)
        self.pieces: Pieces = self._restore(plugins)
        check_keras_archive(self.run.model_file)
        self.model = load_keras_model(self.run.model_file, unsafe)
        check_model_fits(self)

    def _restore(self, plugin_files: Sequence[str]) -> Pieces:
        from kit.plugins import get_plugins

        plugins = get_plugins()
        if plugin_files:
            _load_named_plugins(plugins, plugin_files)
        try:
            with reading(self.run.bundle_file):
                pieces = restore(self.config, self.bundle, plugins)
        except MissingPlugin as exc:
            raise PluginError(_missing_plugin(self.run_dir, exc, self.record, self.bundle)) from None
        except ConfigError as exc:
            raise ModelError(
                f"The saved options of {shown(self.run.bundle_file)} do not fit the installed plugins: {exc}"
            ) from None
        for folder in self.folder.iterdir():  # keras-hub reads these: check the classes they name first
            if folder.is_dir():
                check_preset_files(folder)
        with reading(self.run.bundle_file):
            pieces.backbone.load(self.folder, self.bundle["backbone"])
        return pieces

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
        plan = data_plan(config, train_described="The input")  # not "data.train": it came from the command line
        fields = self.kind.fields + (self.task.fields if with_targets else [])
        role = {f.column: "a target" for f in self.task.fields}
        check_columns(plan.sources["train"], fields, lambda column: role.get(column, "an input of this model"))
        return plan, fields

    def evaluate(self, source: str) -> dict[str, dict[str, float]]:
        """Metrics on labelled data from `source` (a path or scheme), keyed "data"."""
        from kit.data.pipeline import finished, trimmed
        from kit.data.splits import evaluation_batches, split_examples, traced_preprocessing

        plan, fields = self.plan_for(source, with_targets=True)
        check = self.pieces.check_example
        reports = scan(plan, fields, self.config.data.bad_rows, learn=False, check=check)
        say(report_text({"data": reports["train"]}))
        preprocess = traced_preprocessing(self.backbone)
        found, _ = split_examples(self.pieces, "train", reports["train"].rows, preprocess, plan=plan)
        _, batches = evaluation_batches(found, self.config.data, self.trimmed)  # as `kit run` evaluates
        batches = finished(trimmed(batches) if self.trimmed else batches)
        return {"data": split_metrics(self.model, self.task, batches, None, "data")}

    @functools.cached_property
    def trimmed(self) -> bool:
        """Whether batches of texts are cut to their longest text, as in training (`data.trim_padding`).

        Only for a model with one output, per example: a per-token output (any axis of unknown length, or of
        `model.sequence_length`) would come out cut too, and several outputs are not put back in order.
        """
        import tensorflow as tf

        from kit.data.splits import trims_padding

        outputs = getattr(self.model, "outputs", None) or []
        length = getattr(self.config.model, "sequence_length", None)
        per_example = len(outputs) == 1 and all(
            dim is not None and dim != length for dim in tuple(outputs[0].shape)[1:]
        )
        return per_example and trims_padding(self.config, tf.distribute.get_strategy())

    def predict_rows(self, source: str) -> Iterator[dict[str, Any]]:
        """Predictions for every usable row of `source`, each with its line number, in the file's order."""
        from kit.data.pipeline import GROUP_WINDOW, trimmable
        from kit.data.splits import traced_preprocessing

        if not self.task.predicts:  # it says what to use instead (generation: kit generate)
            self.task.predictions(np.zeros((0,)))
        plan, fields = self.plan_for(source, with_targets=False)
        reports = scan(plan, fields, self.config.data.bad_rows, learn=False)
        if reports["train"].bad:
            say(report_text(reports))
        lines = _usable_lines(plan, fields)
        raw = examples(plan, "train", self.kind.fields, [], reports["train"].rows)
        size = self.config.data.batch_size
        preprocess = traced_preprocessing(self.backbone)  # one traced tokenizer for either batching
        batches = self._prediction_batches(raw, size, preprocess)
        if self.trimmed and trimmable(batches.element_spec):  # texts: sorted by length, GROUP_WINDOW batches at a time
            chunks = self._prediction_batches(raw, size * GROUP_WINDOW, preprocess)
            results = ((self.outputs_in_order(x), f) for x, f in chunks)
        else:  # one batch at a time, as it comes
            results = ((self.outputs_of(x), f) for x, f in batches)
        for outputs, features in results:
            for prediction in self.predictions(outputs, {k: v.numpy() for k, v in features.items()}):
                yield {"line": next(lines), **prediction}

    def _prediction_batches(self, raw: Any, size: int, preprocess: Any) -> Any:
        """(model inputs, raw features) of `raw` examples, `size` at a time, in order, through `preprocess`
        (`traced_preprocessing`'s: a batch at a time when the backbone can)."""
        import tensorflow as tf

        from kit.data.pipeline import finished

        with_features = tf.autograph.experimental.do_not_convert(lambda x: (preprocess(x), x))
        if self.backbone.vectorised:
            return finished(raw.batch(size).map(with_features))
        return finished(raw.map(with_features).batch(size))

    def outputs_in_order(self, inputs: dict[str, Any]) -> np.ndarray:
        """The model's outputs for a chunk of token sequences, in their order, computed `data.batch_size` at a
        time with texts of like length together, each batch cut to its longest text (as `kit run` evaluates)."""
        from kit.evaluation import own_predict_step

        inputs = {key: np.asarray(value) for key, value in inputs.items()}
        mask = inputs["padding_mask"]
        lengths = mask.astype(bool).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        size = self.config.data.batch_size
        forward = self.outputs_of if own_predict_step(self.model) else self._traced_forward(inputs, mask.shape[1])
        outputs = None
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            longest = max(int(lengths[rows].max()), 1)
            batch = {
                k: v[rows, :longest] if v.ndim == 2 and v.shape[1] == mask.shape[1] else v[rows]
                for k, v in inputs.items()
            }
            found = forward(batch)
            if outputs is None:
                outputs = np.empty((len(order), *found.shape[1:]), found.dtype)
            outputs[rows] = found
        return outputs if outputs is not None else np.zeros((0,))

    def _traced_forward(self, inputs: dict[str, np.ndarray], width: int) -> Any:
        """The model's outputs for batches like `inputs`, of any number of rows and any length (on the axes of
        `width` columns, the token axes): one function traced once for all the lengths a file brings (Keras's
        `predict_on_batch` traces for the first batch's exact shape, then again), dense layers fused."""
        import tensorflow as tf

        from kit.fused_dense import fused_dense_layers

        spec = {
            key: tf.TensorSpec([None] + [None if size == width else size for size in value.shape[1:]], value.dtype)
            for key, value in inputs.items()
        }
        key = tuple((name, s.dtype.name, tuple(s.shape)) for name, s in sorted(spec.items()))
        function = self._forwards.get(key)
        if function is None:
            function = self._forwards[key] = tf.function(
                lambda x: self.model(x, training=False), input_signature=[spec], autograph=False
            )

        def forward(batch: dict[str, np.ndarray]) -> np.ndarray:
            with fused_dense_layers():
                return np.asarray(function(batch))

        return forward

    @functools.cached_property
    def _forwards(self) -> dict[tuple, Any]:
        return {}

    def outputs_of(self, batch: Any) -> np.ndarray:
        """The model's outputs for one batch, its dense layers fused with their bias and activation."""
        from kit.fused_dense import fused_dense_layers

        with fused_dense_layers():
            return np.asarray(self.model.predict_on_batch(batch))

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
        try:
            plan = data_plan(self.config)
            split = "test" if "test" in plan.splits() else plan.splits()[-1]
            scan(plan, self.kind.fields, "skip", learn=False)
            return next(iter(examples(plan, split, self.kind.fields, []).batch(count)))
        except (DataError, ConfigError) as exc:
            raise DataError(
                f"kit export checks the exported model on examples of the run's own data (data.train in "
                f"{shown(self.run.config_file)}), which cannot be read here: {exc}"
            ) from None


def refuse_unpredictable(bundle: dict[str, Any]) -> None:
    """A task that does not predict rows (generation continues text) says what to use instead, at once."""
    from kit.plugins import get_plugins

    plugins = get_plugins()
    plugins.collect()
    entry = plugins.tasks.items.get(bundle["task"]["name"])
    if entry is not None and not entry.obj.predicts:
        entry.obj.__new__(entry.obj).predictions(np.zeros((0,)))


# ------------------------------------------------------------------ plugins a run needs


def _load_named_plugins(plugins: Any, plugin_files: Sequence[str]) -> None:
    try:
        plugins.load_project_plugins(list(plugin_files), Path.cwd())
        plugins.check_project_plugins()
    except PluginError as exc:
        message = str(exc).replace("(from `plugins:` in kit.yaml)", "(from --plugin)")
        raise PluginError(message.replace("(named in `plugins:` in kit.yaml)", "(from --plugin)")) from None


def _missing_plugin(run_dir: Path, missing: MissingPlugin, record: dict[str, Any], bundle: dict[str, Any]) -> str:
    """Which plugin and version trained the run (run.json), and --plugin for a project's own plugin file."""
    versions = record.get("plugins") if isinstance(record.get("plugins"), dict) else {}
    plugin = missing.plugin or (record.get("task_plugin") if missing.what == "task" else None)
    version = versions.get(plugin) if isinstance(plugin, str) else None
    made_by = f" (it came from the plugin {quoted(plugin)}{f' {quoted(version)}' if version else ''})"
    listing = {"task": "tasks", "input kind": "tasks --json", "backbone family": "backbones"}[missing.what]
    message = (
        f"{shown(run_dir)} was trained with the {missing.what} {quoted(missing.name)}, which no installed plugin "
        f"provides{made_by if plugin else ''}. Install that plugin (see `kit {listing}`)"
    )
    files = bundle["config"].get("plugins")
    if files:
        named = ", ".join(quoted(f) for f in files[:5]) if isinstance(files, list) else quoted(files)
        message += (
            f", or, if it comes from a project's own plugin file ({named} in the run's config), pass that file "
            f"with --plugin FILE once you trust its code"
        )
    return message + ". kit never imports code named by a run folder."


# ------------------------------------------------------------------ does model.keras belong to kit_model.json?


def check_model_fits(trained: TrainedModel) -> None:
    """model.keras must take the inputs kit_model.json describes and give the outputs its task expects.

    A model.keras copied from another run (other columns, other labels) would
    otherwise fail at the first batch, or silently pair outputs with the wrong labels.
    """
    where = f"{shown(trained.run.model_file)} and {shown(trained.run.bundle_file)}"
    try:
        outputs = plain_model(trained.model)(trained.backbone.preprocess_batch(blank_features(trained)), training=False)
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


def plain_model(model: Any) -> Any:
    """The model fed with preprocessed inputs (a keras-hub task without its preprocessor)."""
    if getattr(model, "preprocessor", None) is None:
        return model
    return type(model)(backbone=model.backbone, preprocessor=None)


def blank_features(trained: TrainedModel) -> dict[str, Any]:
    """One example with a plain value in every input column, as tf.data gives them (images as pixels)."""
    import tensorflow as tf

    from kit.data.fields import ImageField

    features = {}
    for f in trained.kind.fields:
        if isinstance(f, ImageField):
            features[f.column] = tf.zeros((1, 8, 8, 3), "uint8")
        elif f.dtype == "str":
            features[f.column] = tf.fill((1, *f.shape), "a")
        else:
            features[f.column] = tf.zeros((1, *f.shape), f.dtype)
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
    except Exception:  # noqa: BLE001  a task may build its whole model instead; then there is nothing to compare
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
    if run is None or not (real == run or _is_inside(real, RunDir(run).model_dir)):
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
    (`kit.outputs`): a failure or Ctrl-C leaves no half-written file.
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
        flat = dotted_keys(row)  # nested prediction fields as their own columns
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
