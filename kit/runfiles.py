"""Reading a run folder that may come from someone else: files, records and saved configs, as data only.

Every file must be a plain file inside the run folder (links out of it,
devices, pipes and loops are refused); JSON files are size-bounded and checked
against the shape kit writes; every class a saved Keras config or keras-hub
preset names must be Keras's, keras-hub's or one an installed plugin
registered, and a `.keras` archive must not unpack far beyond its size. Damage
of any kind is a `RunDirError`/`ModelError` naming the file, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import stat
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from kit.config import build_config
from kit.console import say
from kit.errors import ConfigError, KitError, ModelError, PluginError, RunDirError, UsageError
from kit.outputs import shown
from kit.rundir import RunDir

RUN_FILE, CONFIG_COPY, METRICS_FILE = RunDir.RECORD, RunDir.CONFIG, RunDir.METRICS
MODEL_DIR, BUNDLE_FILE, MODEL_FILE = RunDir.MODEL, RunDir.BUNDLE, RunDir.MODEL_FILE
BUNDLE_FORMAT = 2  # of kit_model.json: 2 names the input kind and the backbone family
MiB = 2**20
RECORD_LIMIT = 16 * MiB  # run.json, metrics.json: a few KB when kit writes them
BUNDLE_LIMIT = 256 * MiB  # kit_model.json, vocabularies, preset JSON: category vocabularies can be large
MAX_FEATURES = 100_000
MAX_MODEL_FILES = 10_000
ZIP_RATIO = 20  # kit's .keras files are stored uncompressed; a much larger unpacked size is a zip bomb
TRUSTED_PACKAGES = {"keras", "keras_hub", "kit", "kit_plugins"}
KERAS_BUILTINS = ("activations", "losses", "metrics", "optimizers", "initializers", "regularizers", "constraints")


# ------------------------------------------------------------------ reading a run folder


def quoted(value: Any, limit: int = 80) -> str:
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
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{shown(path)} is damaged: a folder, not a file. {advice}")
    if not stat.S_ISREG(info.st_mode):  # a pipe would block, /dev/zero would never end
        raise error(f"{shown(path)} is not a plain file (a device, pipe or socket); kit will not read it.")
    size = info.st_size
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
            f"evaluation (run.json status: {quoted(status)}). Finish it with {_finish_hint(run_dir)} (it resumes and "
            f"evaluates), or compute metrics on labelled data with `kit eval {shown(run_dir)} --data FILE`."
        )
    return (
        f"{shown(run_dir)} has no metrics yet: its training has not finished (run.json status: {quoted(status)}). "
        f"Finish it with {_finish_hint(run_dir)}."
    )


def _metrics_problem(metrics: Any) -> str | None:
    """What is wrong with metrics.json's shape ({split: {metric: number}}), or None."""
    if not isinstance(metrics, dict):
        return f"expected a JSON object of splits, found {type(metrics).__name__}"
    for split, values in metrics.items():
        if not isinstance(values, dict):
            return f"split {quoted(split)} should map metric names to numbers, found {type(values).__name__}"
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"metric {quoted(f'{split}.{name}')} is {quoted(value)}, not a number"
    return None


def warn_if_unfinished(run_dir: Path, record: dict[str, Any]) -> None:
    """Say so when a run's training did not finish: its saved model was never evaluated."""
    status = record.get("status")
    if status == "complete":
        return
    say(
        f"kit: warning: {shown(run_dir)} is not a finished run (run.json status: {quoted(status)}): its training "
        f"stopped, or is still going on, after this model was saved, and the model was never evaluated. "
        f"Finish it with {_finish_hint(run_dir)}."
    )


# ------------------------------------------------------------------ the model bundle


def model_folder(run_dir: Path, record: dict[str, Any]) -> Path:
    """The run's model/ folder, with every file in it checked to be a plain file inside the run."""
    folder = run_file(run_dir, MODEL_DIR, ModelError)
    if not (folder / BUNDLE_FILE).is_file() and not (folder / BUNDLE_FILE).is_symlink():
        raise RunDirError(_no_model(run_dir, record))
    for count, path in enumerate(folder.rglob("*")):
        if count >= MAX_MODEL_FILES:
            raise ModelError(f"{shown(folder)} holds more than {MAX_MODEL_FILES} files; it is not a kit model folder.")
        run_file(run_dir, path.relative_to(run_dir), ModelError)
        if path.is_symlink() and path.is_dir():  # kit writes none; copying one (export) could recurse forever
            raise ModelError(
                f"{shown(path)} is a link to a folder; kit writes none into a model folder and will not follow it. "
                f"Use an intact copy of the run."
            )
    return folder


def _no_model(run_dir: Path, record: dict[str, Any]) -> str:
    status = record.get("status")
    if status == "complete":
        return (
            f"{shown(run_dir)} has no model: {MODEL_DIR}/{BUNDLE_FILE} is missing although run.json says the run is "
            f"complete (deleted or moved?). Use an intact copy of the run, or train it again."
        )
    return (
        f"{shown(run_dir)} has no trained model yet (run.json status: {quoted(status)}). "
        f"Finish it with {_finish_hint(run_dir)}."
    )


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
    if meta.get("format") != BUNDLE_FORMAT:
        return (
            f"it was written by another version of kit (format {quoted(meta.get('format', 1))}, this kit reads "
            f"{BUNDLE_FORMAT}): train the run again with this version"
        )
    expected = {"task": dict, "inputs": dict, "backbone": dict, "features": list, "targets": list, "config": dict}
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind):
            return f"'{key}' should be a {kind.__name__}, found {quoted(meta.get(key), 40)}"
    for part, key in (("task", "name"), ("inputs", "kind"), ("backbone", "family"), ("backbone", "reference")):
        if not _plain_name(meta[part].get(key)) or not meta[part].get(key):
            return f"{part}.{key} should be a name, found {quoted(meta[part].get(key), 40)}"
    if meta["config"].get("task") != meta["task"]["name"]:
        return f"its task {quoted(meta['task']['name'])} differs from its config's {quoted(meta['config'].get('task'))}"
    for key in ("features", "targets"):
        problem = _states_problem(meta[key], key)
        if problem:
            return problem
    return _columns_problem(meta["inputs"].get("columns", []))


def _states_problem(saved: list[Any], key: str) -> str | None:
    if len(saved) > MAX_FEATURES:
        return f"'{key}' lists {len(saved)} columns (kit handles at most {MAX_FEATURES})"
    for index, item in enumerate(saved):
        if not isinstance(item, dict) or not _plain_name(item.get("column")):
            return f"{key}[{index}] should be an object with a 'column' name (text without control characters)"
        problem = _state_problem(item.get("state"))
        if problem:
            return f"the learned state of {key[:-1]} {quoted(item['column'])} {problem}"
    return None


def _state_problem(state: Any) -> str | None:
    """Learned states hold finite numbers and, for categories, a vocabulary of distinct strings."""
    if not isinstance(state, dict):
        return f"should be an object, found {quoted(state, 40)}"
    vocabulary = state.get("vocabulary")
    if "vocabulary" in state and not (isinstance(vocabulary, list) and all(isinstance(v, str) for v in vocabulary)):
        return "has a vocabulary that is not a list of strings"
    if vocabulary is not None and len(set(vocabulary)) != len(vocabulary):
        return "has a vocabulary with repeated entries"
    for name, value in state.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"has {name} = {value}, not a finite number"
    return None


def _plain_name(name: Any) -> bool:
    """A column name kit could have read from a header: text without control characters (they would
    reach the terminal in messages: an escape sequence could rewrite what the user sees)."""
    return isinstance(name, str) and not any(ord(c) < 32 or ord(c) == 127 for c in name)


def _columns_problem(columns: Any) -> str | None:
    """inputs.columns: the names a kind read (plain strings, or {name, type} for tables)."""
    if not isinstance(columns, list) or len(columns) > MAX_FEATURES:
        return f"inputs.columns should list at most {MAX_FEATURES} columns"
    names = []
    for column in columns:
        name = column.get("name") if isinstance(column, dict) else column
        if not _plain_name(name):
            return "inputs.columns should hold column names (text without control characters)"
        if isinstance(column, dict) and column.get("type") not in ("number", "category"):
            return f"column {quoted(name)} has type {quoted(column.get('type'))}, not number or category"
        names.append(name)
    return "inputs.columns names a column twice" if len(set(names)) != len(names) else None


def saved_config(meta: dict[str, Any], path: Path, reference: Any) -> Any:
    """The run's resolved config, with what could run code or write files taken out.

    `reference` is the backbone reference the run recorded: its folder need not exist here.
    """
    raw = {**meta["config"], "plugins": []}  # a run folder never names code to import
    try:
        config = build_config(raw, reference=reference)
    except ConfigError as exc:
        raise damaged(path, f"its saved config is invalid ({exc})") from None
    return dataclasses.replace(config, plugins=[], runs_dir=None)


def confine_names(meta: dict[str, Any], folder: Path, path: Path) -> None:
    """File and folder names the backbone's saved state gives must stay inside the model folder."""
    for key, name in meta["backbone"].items():
        if not key.endswith(("_dir", "_file")):
            continue
        if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise damaged(path, f"backbone.{key} is {quoted(name)}; it must name something inside {shown(folder)}")
        target = folder / name
        if target.is_file() and target.stat().st_size > BUNDLE_LIMIT:
            raise damaged(path, f"{shown(target)} is {target.stat().st_size / MiB:.0f} MB, far more than kit writes")


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
                    f"{where} asks to load {quoted(name)}, which is not a Keras or keras-hub class nor one an installed "
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

    from kit.compat import fix_keras_hub
    from kit.lazy_init import deferred_random_init

    fix_keras_hub()
    check_keras_archive(path)
    try:
        # compile=False: inference needs no optimizer state (resuming uses the run's backup/). The file's
        # weights overwrite the model's initial values: none are drawn.
        with deferred_random_init():
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
    from kit.assembly import RestoreError

    try:
        yield
    except RestoreError as exc:
        raise damaged(path, str(exc)) from None
    except KitError as exc:
        if isinstance(exc, (ModelError, PluginError, UsageError)):
            raise
        raise damaged(path, str(exc)) from None
    except (OSError, MemoryError) as exc:
        raise ModelError(f"Cannot read {shown(path)}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  a damaged or foreign file, whatever the library trips on
        raise _unloadable(path, exc) from None
