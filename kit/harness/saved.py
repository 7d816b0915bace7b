"""Using a trained run: load its model, evaluate, predict, export.

A run's `model/` folder holds `model.keras` (loaded with Keras safe mode) and
`kit_model.json` (task, input kind, learned field states, resolved config).

A run folder may come from someone else, so everything read from it is data,
never code: the task's plugin must be installed (or named with --plugin on the
command line; the plugins a saved config names are never imported), every file
must be a plain file inside the run folder, JSON files are size-bounded and
checked, and every class a saved Keras config names must be Keras's,
keras-hub's or one an installed plugin registered. Damage of any kind is a
`ModelError`/`RunDirError` naming the file, never a traceback.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import stat
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import numpy as np

from kit.config import build_config
from kit.data.pipeline import batched, examples
from kit.data.plan import DataPlan, check_columns, parse_row, report_text, scan
from kit.errors import ConfigError, DataError, KitError, ModelError, PluginError, RunDirError, UsageError
from kit.harness.outputs import enclosing_run, folder_replaced_when_complete, replaced_when_complete, shown
from kit.harness.rundir import CONFIG_COPY, RUN_FILE
from kit.harness.setup import data_plan, load_task, say
from kit.harness.trainer import BUNDLE_FILE, MODEL_FILE, keras_hub_backbone, split_metrics

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
KINDS = ("text", "tabular", "image", "decoder")  # what kit.inputs.make_inputs builds
MiB = 2**20
RECORD_LIMIT = 16 * MiB  # run.json, metrics.json: a few KB when kit writes them
BUNDLE_LIMIT = 256 * MiB  # kit_model.json, vocabularies, preset JSON: category vocabularies can be large
MAX_FEATURES = 100_000
MAX_MODEL_FILES = 10_000
ZIP_RATIO = 20  # kit's .keras files are stored uncompressed; a much larger unpacked size is a zip bomb
TRUSTED_PACKAGES = {"keras", "keras_hub", "kit", "kit_plugins"}
KERAS_BUILTINS = ("activations", "losses", "metrics", "optimizers", "initializers", "regularizers", "constraints")


# ------------------------------------------------------------------ reading a run folder


def _quote(value: Any, limit: int = 80) -> str:
    """A value read from a run folder, shown safely in a one-line message."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(text)


def _finish_hint(run_dir: Path) -> str:
    return f"`kit run {shown(run_dir / CONFIG_COPY)} --run-dir {shown(run_dir)}`"


def run_file(run_dir: Path, relative: str | Path, error: type[KitError] = RunDirError) -> Path:
    """`relative` inside the run folder, refusing names and links that lead out of it and anything not a plain file."""
    path = run_dir / relative
    try:
        real, root = path.resolve(), run_dir.resolve()
    except (OSError, RuntimeError):
        raise error(
            f"{shown(path)} is a symbolic link that loops; kit cannot read it. Use an intact copy of the run."
        ) from None
    if real != root and root not in real.parents:
        raise error(
            f"{shown(path)} leads outside the run directory (to {shown(real)}); kit reads only files inside a run. "
            f"Use a copy of the run whose files are all inside its folder."
        )
    if path.exists() and not (stat.S_ISREG(path.stat().st_mode) or path.is_dir()):
        raise error(f"{shown(path)} is not a plain file (a device, pipe or socket); kit will not read it.")
    return path


def read_json(path: Path, limit: int, error: type[KitError], advice: str) -> Any:
    """Parse a JSON file kit wrote, with its size bounded; damage is an `error` naming the file."""
    size = path.stat().st_size
    if size > limit:
        raise error(f"{shown(path)} is {size / MiB:.0f} MB, far more than kit writes there; it is not kit's. {advice}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except (ValueError, RecursionError) as exc:
        problem = f"not JSON kit can read ({type(exc).__name__}: {str(exc)[:100]})"
    except IsADirectoryError:
        problem = "a folder, not a file"
    raise error(f"{shown(path)} is damaged: {problem}. {advice}")


def read_record(run_dir: Path) -> dict[str, Any]:
    """The run record (run.json) of a run directory, or a RunDirError saying what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(
            f"No run directory at {shown(run_dir)}. Pass a folder written by `kit run` (e.g. runs/run-1)."
        )
    if not run_dir.is_dir():
        raise RunDirError(f"{shown(run_dir)} is a file, not a run directory. Pass a folder written by `kit run`.")
    path = run_file(run_dir, RUN_FILE)
    if not path.is_file():
        raise RunDirError(_not_a_run(run_dir))
    advice = "The run directory is damaged; use an intact copy (train again if there is none)."
    record = read_json(path, RECORD_LIMIT, RunDirError, advice)
    if not isinstance(record, dict):
        raise RunDirError(f"{shown(path)} is damaged: expected a JSON object, found {type(record).__name__}. {advice}")
    return record


def _not_a_run(folder: Path) -> str:
    """Why `folder` is not a run, with the run the user probably meant."""
    message = f"{shown(folder)} is not a kit run directory (no {RUN_FILE})."
    if (folder / BUNDLE_FILE).is_file() and (folder.parent / RUN_FILE).is_file():
        return f"{message} It is a run's model folder: pass the run directory {shown(folder.parent)}."
    runs = sorted(folder.glob(f"runs/run-*/{RUN_FILE}"), key=lambda p: (len(p.parent.name), p.parent.name))
    if runs:
        return f"{message} It looks like a project: pass one of its runs, e.g. {shown(runs[-1].parent)}."
    return f"{message} Pass a folder written by `kit run` (e.g. runs/run-1)."


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The final metrics of a run (metrics.json), or an error saying why there are none and what to do."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    path = run_file(run_dir, METRICS_FILE)
    if not path.exists():
        raise RunDirError(_no_metrics(run_dir, record))
    advice = f"Compute metrics again on labelled data with `kit eval {shown(run_dir)} --data FILE`."
    metrics = read_json(path, RECORD_LIMIT, RunDirError, advice)
    problem = _metrics_problem(metrics)
    if problem:
        raise RunDirError(f"{shown(path)} is damaged: {problem}. {advice}")
    warn_if_unfinished(run_dir, record)
    return metrics


def _no_metrics(run_dir: Path, record: dict[str, Any]) -> str:
    status = record.get("status")
    if status == "complete":
        return (
            f"{shown(run_dir / METRICS_FILE)} is missing although run.json says the run is complete (deleted or "
            f"moved?). Compute metrics again on labelled data with `kit eval {shown(run_dir)} --data FILE`."
        )
    if (run_dir / MODEL_DIR / BUNDLE_FILE).is_file():
        return (
            f"{shown(run_dir)} has no final metrics: its training stopped after the model was saved, before the final "
            f"evaluation (run.json status: {_quote(status)}). Finish it with {_finish_hint(run_dir)} (it resumes and "
            f"evaluates), or compute metrics on labelled data with `kit eval {shown(run_dir)} --data FILE`."
        )
    return (
        f"{shown(run_dir)} has no metrics yet: its training has not finished (run.json status: {_quote(status)}). "
        f"Finish it with {_finish_hint(run_dir)}."
    )


def _metrics_problem(metrics: Any) -> str | None:
    """What is wrong with metrics.json's shape ({split: {metric: number}}), or None."""
    if not isinstance(metrics, dict):
        return f"expected a JSON object of splits, found {type(metrics).__name__}"
    for split, values in metrics.items():
        if not isinstance(values, dict):
            return f"split {_quote(split)} should map metric names to numbers, found {type(values).__name__}"
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"metric {_quote(f'{split}.{name}')} is {_quote(value)}, not a number"
    return None


def warn_if_unfinished(run_dir: Path, record: dict[str, Any]) -> None:
    """Say so when a run's training did not finish: its saved model was never evaluated."""
    status = record.get("status")
    if status == "complete":
        return
    say(
        f"kit: warning: {shown(run_dir)} is not a finished run (run.json status: {_quote(status)}): its training "
        f"stopped, or is still going on, after this model was saved, and the model was never evaluated. "
        f"Finish it with {_finish_hint(run_dir)}."
    )


# ------------------------------------------------------------------ the model bundle


def model_folder(run_dir: Path, record: dict[str, Any]) -> Path:
    """The run's model/ folder, with every file in it checked to be a plain file inside the run."""
    folder = run_file(run_dir, MODEL_DIR, ModelError)
    if not (folder / BUNDLE_FILE).is_file() and not (folder / BUNDLE_FILE).is_symlink():
        raise RunDirError(
            f"{shown(run_dir)} has no trained model yet (run.json status: {_quote(record.get('status'))}). "
            f"Finish it with {_finish_hint(run_dir)}."
        )
    for count, path in enumerate(folder.rglob("*")):
        if count >= MAX_MODEL_FILES:
            raise ModelError(f"{shown(folder)} holds more than {MAX_MODEL_FILES} files; it is not a kit model folder.")
        run_file(run_dir, path.relative_to(run_dir), ModelError)
    return folder


def damaged(path: Path, problem: str) -> ModelError:
    return ModelError(
        f"{shown(path)} is damaged: {problem}. Use an intact copy of the run, or train it again "
        f"(`kit run RUN_DIR/{CONFIG_COPY}`)."
    )


def read_bundle(run_dir: Path, folder: Path) -> dict[str, Any]:
    """kit_model.json, checked against the shape kit writes."""
    path = run_file(run_dir, folder.relative_to(run_dir) / BUNDLE_FILE, ModelError)
    meta = read_json(path, BUNDLE_LIMIT, ModelError, "Use an intact copy of the run, or train it again.")
    problem = _bundle_problem(meta)
    if problem:
        raise damaged(path, problem)
    return meta


def _bundle_problem(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return f"expected a JSON object, found {type(meta).__name__}"
    expected = {"task": str, "inputs": dict, "features": list, "targets": list, "config": dict}
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind):
            return f"'{key}' should be a {kind.__name__}, found {_quote(meta.get(key), 40)}"
    if meta["inputs"].get("kind") not in KINDS:
        return f"inputs.kind is {_quote(meta['inputs'].get('kind'))}; kit knows {', '.join(KINDS)}"
    if meta["config"].get("task") != meta["task"]:
        return f"its task {_quote(meta['task'])} differs from its config's {_quote(meta['config'].get('task'))}"
    for key in ("features", "targets"):
        problem = _states_problem(meta[key], key)
        if problem:
            return problem
    return _columns_problem(meta["inputs"].get("columns", []))


def _states_problem(saved: list[Any], key: str) -> str | None:
    if len(saved) > MAX_FEATURES:
        return f"'{key}' lists {len(saved)} columns (kit handles at most {MAX_FEATURES})"
    for index, item in enumerate(saved):
        if not isinstance(item, dict) or not isinstance(item.get("column"), str):
            return f"{key}[{index}] should be an object with a 'column' name"
        problem = _state_problem(item.get("state"))
        if problem:
            return f"the learned state of {key[:-1]} {_quote(item['column'])} {problem}"
    return None


def _state_problem(state: Any) -> str | None:
    """Learned states hold finite numbers and, for categories, a vocabulary of distinct strings."""
    if not isinstance(state, dict):
        return f"should be an object, found {_quote(state, 40)}"
    vocabulary = state.get("vocabulary")
    if "vocabulary" in state and not (isinstance(vocabulary, list) and all(isinstance(v, str) for v in vocabulary)):
        return "has a vocabulary that is not a list of strings"
    if vocabulary is not None and len(set(vocabulary)) != len(vocabulary):
        return "has a vocabulary with repeated entries"
    for name, value in state.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"has {name} = {value}, not a finite number"
    return None


def _columns_problem(columns: Any) -> str | None:
    if not isinstance(columns, list) or len(columns) > MAX_FEATURES:
        return f"inputs.columns should list at most {MAX_FEATURES} columns"
    for column in columns:
        if not (isinstance(column, dict) and isinstance(column.get("name"), str)):
            return "inputs.columns should hold objects with a 'name'"
        if column.get("type") not in ("number", "category"):
            return f"column {_quote(column['name'])} has type {_quote(column.get('type'))}, not number or category"
    names = [c["name"] for c in columns]
    return "inputs.columns names a column twice" if len(set(names)) != len(names) else None


def saved_config(meta: dict[str, Any], path: Path) -> Any:
    """The run's resolved config, with what could run code or write files taken out."""
    raw = {**meta["config"], "plugins": []}  # a run folder never names code to import
    try:
        config = build_config(raw)
    except ConfigError as exc:
        raise damaged(path, f"its saved config is invalid ({exc})") from None
    return dataclasses.replace(config, plugins=[], runs_dir=None)


def confine_names(meta: dict[str, Any], folder: Path, path: Path) -> None:
    """File names kit_model.json gives (vocabulary, preprocessor folder) must stay inside the model folder."""
    for key in ("vocabulary_file", "preprocessor_dir"):
        name = meta["inputs"].get(key)
        if name is None:
            continue
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise damaged(path, f"inputs.{key} is {_quote(name)}; it must name a file inside {shown(folder)}")
    if meta["inputs"].get("preprocessor_class", "TextClassifierPreprocessor") not in (
        "TextClassifierPreprocessor",
        "CausalLMPreprocessor",
    ):
        raise damaged(path, f"inputs.preprocessor_class is {_quote(meta['inputs'].get('preprocessor_class'))}")


# ------------------------------------------------------------------ the task's plugin


def restore_task(run_dir: Path, config: Any, meta: dict[str, Any], plugin_files: Sequence[str]) -> Any:
    """The run's task, from an installed plugin or one named with --plugin; never from the run folder."""
    from kit.plugins import get_plugins

    plugins = get_plugins()
    if plugin_files:
        _load_named_plugins(plugins, plugin_files)
    plugins.collect()
    if config.task not in plugins.tasks.items and config.task not in plugins.tasks.conflicts:
        raise PluginError(_missing_plugin(run_dir, config.task, read_record(run_dir), meta))
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
    made_by = f" (run.json: it came from the plugin {_quote(plugin)}{f' {_quote(version)}' if version else ''})"
    message = (
        f"{shown(run_dir)} was trained with the task {_quote(task)}, which no installed plugin provides"
        f"{made_by if plugin else ''}. Install that plugin (see `kit tasks`)"
    )
    files = meta["config"].get("plugins")
    if files:
        named = ", ".join(_quote(f) for f in files[:5]) if isinstance(files, list) else _quote(files)
        message += (
            f", or, if the task comes from a project's own plugin file ({named} in the run's config), pass "
            f"that file with --plugin FILE once you trust its code"
        )
    return message + ". kit never imports code named by a run folder."


# ------------------------------------------------------------------ what Keras may deserialise


def check_classes(config: Any, where: str) -> None:
    """Refuse a saved Keras config naming a class or function outside Keras, keras-hub and registered objects.

    Keras in safe mode refuses these too; checking first gives one clear
    message and does not depend on the Keras version.
    """
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if not _trusted(node):
                name = (
                    f"{node['module']}.{node.get('config') if node['class_name'] == 'function' else node['class_name']}"
                )
                raise ModelError(
                    f"{where} asks to load {_quote(name)}, which is not a Keras or keras-hub class nor one an installed "
                    f"plugin registered. kit refuses it: loading a model must never run other code. If the model "
                    f"needs a plugin's layers, install that plugin."
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _trusted(node: dict[str, Any]) -> bool:
    module, class_name = node.get("module"), node.get("class_name")
    if not isinstance(module, str) or not module or not isinstance(class_name, str):
        return True  # Keras resolves these by registered name only, importing nothing
    if module.split(".")[0] in TRUSTED_PACKAGES:
        return True
    import keras

    if module == "builtins" and class_name == "function" and isinstance(node.get("config"), str):
        return any(hasattr(getattr(keras, part), node["config"]) for part in KERAS_BUILTINS)
    registered = node.get("registered_name")
    return isinstance(registered, str) and keras.saving.get_registered_object(registered) is not None


def check_preset_files(folder: Path) -> None:
    """Every JSON file of a keras-hub preset (or preprocessor) folder, checked before keras-hub reads it."""
    for path in sorted(folder.rglob("*.json")):
        config = read_json(path, BUNDLE_LIMIT, ModelError, "Use an intact copy of the run.")
        check_classes(config, shown(path))


def check_keras_archive(path: Path) -> None:
    """A `.keras` file must be a zip archive of sane size whose config names only classes kit trusts."""
    if not path.is_file():
        raise ModelError(f"{shown(path)} is missing. Use an intact copy of the run, or train it again.")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            _check_unpacked_size(path, entries)
            config = json.loads(archive.read("config.json").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError, EOFError, NotImplementedError) as exc:
        raise ModelError(
            f"{shown(path)} is not a Keras model file (a zip archive holding config.json): {type(exc).__name__}: "
            f"{str(exc)[:120]}. Use an intact copy of the run."
        ) from None
    check_classes(config, f"{shown(path)} (config.json)")


def _check_unpacked_size(path: Path, entries: list[zipfile.ZipInfo]) -> None:
    unpacked = sum(entry.file_size for entry in entries)
    if len(entries) > MAX_MODEL_FILES or unpacked > ZIP_RATIO * path.stat().st_size + 64 * MiB:
        raise ModelError(
            f"{shown(path)} would unpack to {unpacked / MiB:.0f} MB ({len(entries)} files) from "
            f"{path.stat().st_size / MiB:.1f} MB: it is not a model kit wrote (a zip bomb?). kit will not load it."
        )
    if any(entry.filename.startswith("/") or ".." in entry.filename.split("/") for entry in entries):
        raise ModelError(f"{shown(path)} holds file names that leave its folder; kit will not load it.")


def load_keras_model(path: Path, unsafe: bool = False) -> Any:
    """Load a `.keras` file in safe mode unless `unsafe` is explicitly requested."""
    import keras

    import kit.harness.optim  # noqa: F401  registers kit's serialisable classes
    from kit.compat import fix_keras_hub

    fix_keras_hub()
    check_keras_archive(path)
    try:
        # compile=False: inference needs no optimizer state (resuming uses the run's backup/).
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise ModelError(
                f"{path} needs unsafe deserialisation (it contains Python code, e.g. a Lambda layer). "
                f"Load it only if you trust its author, with --unsafe."
            ) from None
        raise _unloadable(path, exc) from None
    except OSError as exc:
        raise ModelError(f"Cannot read {shown(path)}: {exc}") from None
    except Exception as exc:  # a damaged or foreign file: whatever Keras trips on, it is the file's fault
        raise _unloadable(path, exc) from None


def _unloadable(path: Path, exc: BaseException) -> ModelError:
    detail = " ".join(str(exc).split())
    detail = detail.split("Exception encountered: ")[-1][:200]  # Keras wraps the cause in a long preamble
    return ModelError(
        f"Cannot load {shown(path)}: {type(exc).__name__}: {detail}. The file is damaged or not a model kit wrote; "
        f"use an intact copy of the run."
    )


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn whatever goes wrong while restoring from `path` into a ModelError naming it."""
    try:
        yield
    except KitError as exc:
        if isinstance(exc, (ModelError, PluginError, UsageError)):
            raise
        raise damaged(path, str(exc)) from None
    except (OSError, MemoryError) as exc:
        raise ModelError(f"Cannot read {shown(path)}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  a damaged or foreign file, whatever the library trips on
        raise _unloadable(path, exc) from None


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
        self.task = restore_task(self.run_dir, self.config, self.meta, plugins)
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
            f"{_quote(', '.join(missing))}; not expected: {_quote(', '.join(extra))}; or in another order)",
        )
    for f, item in zip(fields, saved):
        try:
            f.set_state(item["state"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise damaged(
                path, f"the learned state of {_quote(f.column)} is unusable ({type(exc).__name__}: {exc})"
            ) from None


def refuse_generation(run_dir: Path, meta: dict[str, Any]) -> None:
    """Predicting or evaluating rows makes no sense for a run that continues text."""
    if meta["inputs"]["kind"] == "decoder":
        raise UsageError(
            f"{shown(run_dir)} is a generation run (task {_quote(meta['task'])}): it continues text rather than "
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
    """One example with an empty value in every input column."""
    features = {}
    for f in trained.inputs.fields:
        if f.dtype == "str" and trained.inputs.kind == "image":
            size, channels = trained.inputs.size, trained.inputs.channels
            features[f.column] = np.zeros((1, *size, channels), "float32")
        elif f.dtype == "str":
            features[f.column] = np.array(["a"])
        else:
            features[f.column] = np.zeros((1,), "float32")
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
