"""Catalogue: run directories, trained models and what is read from them, and where eval/predict/export write.

A run folder may come from someone else: every case below that tampers with
one was refused without running code, and left the run and the input as they were.
Cases that need a trained model copy one tiny regression run, trained once per
session (`trained_run`).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from kit.cli import cli
from tests.catalogue import case, tabular_project
from tests.conftest import make_tabular

_TRAINED: dict[str, Path] = {}


def finished_run(root: Path, task: str = "regression") -> Path:
    run_dir = root / "done"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "complete"}))
    (run_dir / "config.yaml").write_text(f"task: {task}\n")
    return run_dir


def trained_run(root: Path) -> Path:
    """A copy under `root` of a finished tabular regression run (trained once per session, 1 epoch)."""
    from click.testing import CliRunner

    if "run" not in _TRAINED:
        cache = Path(tempfile.mkdtemp(prefix="kit-catalogue-"))
        atexit.register(shutil.rmtree, cache, True)
        folder = tabular_project(cache)
        result = CliRunner().invoke(cli, ["run", str(folder)])
        assert result.exit_code == 0, result.output
        _TRAINED["run"] = folder / "runs" / "run-1"
    copy = root / "run"
    shutil.copytree(_TRAINED["run"], copy, symlinks=True)
    return copy


def rows(root: Path) -> Path:
    """A CSV of rows the trained run can predict."""
    return make_tabular(root / "input", rows=20)


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data) or data))


def edit_bundle(run: Path, change: Callable[[dict], Any]) -> Path:
    edit_json(run / "model" / "kit_model.json", change)
    return run


def edit_keras_config(run: Path, change: Callable[[dict], Any]) -> Path:
    """Rewrite config.json inside the run's model.keras (a zip archive)."""
    path = run / "model" / "model.keras"
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename == "config.json":
                config = json.loads(data)
                data = json.dumps(change(config) or config).encode()
            archive.writestr(info, data)
    return run


def naming_function(module: str, name: str) -> Callable[[dict], None]:
    """A change that makes the first Dense layer's activation a function `module.name`."""

    def change(config: dict) -> None:
        dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["activation"] = {
            "module": module,
            "class_name": "function",
            "config": name,
            "registered_name": "function",
        }

    return change


def predict(run: Path, root: Path, *extra: str) -> list[str]:
    return ["predict", str(run), str(rows(root)), *extra]


# ------------------------------------------------------------------ writing a run


@case("run directories", "already holds a complete run")
def run_dir_complete(root, mp):
    """`--run-dir` at a finished run"""
    return ["run", str(tabular_project(root)), "--run-dir", str(finished_run(root))]


@case("run directories", "holds a run of task 'classification', not 'regression'")
def run_dir_of_another_task(root, mp):
    """`--run-dir` at a run of another task"""
    return ["run", str(tabular_project(root)), "--run-dir", str(finished_run(root, "classification"))]


@case("run directories", "is not a kit run directory")
def run_dir_not_a_run(root, mp):
    """`--run-dir` at a folder that is not a run"""
    (root / "photos").mkdir()
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    return ["run", str(tabular_project(root)), "--run-dir", str(root / "photos")]


@case("run directories", "Cannot write to run directory")
def run_dir_not_writable(root, mp):
    """A run directory that cannot be created or written"""
    (root / "file").write_text("a file, not a folder")
    return ["run", str(tabular_project(root)), "--run-dir", str(root / "file" / "run")]


@case("run directories", "The disk is full")
def disk_full(root, mp):
    """The disk fills up while training (simulated `ENOSPC`)"""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "p" / "runs" / "run-1" / "backup"))

    mp.setattr("kit.harness.resume.save_state", full)
    return ["run", str(tabular_project(root))]


# ------------------------------------------------------------------ naming a run


@case("run directories", "No run directory at")
def evaluate_a_missing_run(root, mp):
    """`kit eval` on a run that does not exist"""
    return ["eval", str(root / "runs" / "run-9")]


@case("run directories", "is a file, not a run directory")
def evaluate_a_file(root, mp):
    """`kit eval` given a file as RUN_DIR"""
    return ["eval", str(rows(root))]


@case("run directories", "It looks like a project: pass one of its runs, e.g.")
def predict_with_a_project_folder(root, mp):
    """`kit predict` given the project folder instead of one of its runs"""
    run = trained_run(root / "proj" / "runs")
    run.rename(root / "proj" / "runs" / "run-1")
    return ["predict", str(root / "proj"), str(rows(root))]


@case("run directories", "It is a run's model folder: pass the run directory")
def predict_with_the_model_folder(root, mp):
    """`kit predict` given the run's `model/` folder instead of the run"""
    return ["predict", str(trained_run(root) / "model"), str(rows(root))]


@case("run directories", "is a run directory, not data", exit_code=2)
def predict_the_run_itself(root, mp):
    """`kit predict RUN RUN`: the run directory given as INPUT"""
    run = trained_run(root)
    return ["predict", str(run), str(run)]


@case("run directories", "is inside a run's model folder, not data", exit_code=2)
def eval_data_from_the_model_folder(root, mp):
    """`kit eval RUN --data RUN/model/kit_model.json`"""
    run = trained_run(root)
    return ["eval", str(run), "--data", str(run / "model" / "kit_model.json")]


@case("run directories", "needs a run of the generation task", exit_code=2)
def generate_from_a_regression_run(root, mp):
    """`kit generate` on a regression run"""
    return ["generate", str(trained_run(root)), "Once upon a time"]


def as_generation_run(root: Path) -> Path:
    def change(bundle: dict) -> None:
        bundle["task"]["name"] = bundle["config"]["task"] = "generation"
        bundle["inputs"]["kind"] = "causal_text"
        bundle["targets"], bundle["config"]["data"]["target"] = [], None

    return edit_bundle(trained_run(root), change)


@case("run directories", "A generation run continues text rather than predicting labels: use `kit generate RUN_DIR", exit_code=2)  # fmt: skip
def predict_with_a_generation_run(root, mp):
    """`kit predict` on a generation run (say what to use instead: `kit generate`; `kit eval --data` gives its perplexity)"""
    return predict(as_generation_run(root), root)


# ------------------------------------------------------------------ runs that did not finish


def killed_after_saving(root: Path) -> Path:
    run = trained_run(root)
    edit_json(run / "run.json", lambda record: record.update(status="running"))
    (run / "metrics.json").unlink()
    return run


@case("run directories", "has no final metrics: its training stopped after the model was saved")
def eval_run_killed_after_saving_its_model(root, mp):
    """`kit eval` on a run killed after its model was saved (status "running", no metrics.json)"""
    return ["eval", str(killed_after_saving(root))]


@case("run directories", "has no trained model yet (run.json status: 'running')")
def predict_with_a_run_still_training(root, mp):
    """`kit predict` on a run still training (no model saved yet)"""
    run = killed_after_saving(root)
    shutil.rmtree(run / "model")
    return predict(run, root)


@case("run directories", "is missing although run.json says the run is complete")
def eval_run_without_metrics(root, mp):
    """`kit eval` on a complete run whose metrics.json was deleted"""
    run = trained_run(root)
    (run / "metrics.json").unlink()
    return ["eval", str(run)]


# ------------------------------------------------------------------ damaged records


@case("run directories", "metrics.json is damaged: not valid JSON (line")
def eval_truncated_metrics(root, mp):
    """`kit eval` on a run whose metrics.json was cut short"""
    run = trained_run(root)
    text = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text(text[: len(text) // 2])
    return ["eval", str(run)]


@case("run directories", "metrics.json is damaged: metric 'test.r2' is 'high', not a number")
def eval_metrics_of_wrong_types(root, mp):
    """`kit eval` on a metrics.json holding text where numbers belong"""
    run = trained_run(root)
    (run / "metrics.json").write_text('{"test": {"r2": "high"}}')
    return ["eval", str(run)]


@case("run directories", "metrics.json is 17 MB, far more than kit writes there")
def eval_huge_metrics(root, mp):
    """`kit eval` on a 17 MB metrics.json"""
    run = trained_run(root)
    (run / "metrics.json").write_text(" " * (17 * 2**20) + "{}")
    return ["eval", str(run)]


@case("run directories", "metrics.json is damaged: not JSON kit can read (RecursionError")
def eval_deeply_nested_metrics(root, mp):
    """`kit eval` on a metrics.json nested 100,000 levels deep"""
    run = trained_run(root)
    (run / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    return ["eval", str(run)]


@case("run directories", "metrics.json is damaged: not JSON kit can read (ValueError: Exceeds the limit")
def eval_metrics_with_a_huge_number(root, mp):
    """`kit eval` on a metrics.json holding a 5,000-digit integer"""
    run = trained_run(root)
    (run / "metrics.json").write_text('{"test": {"rows": ' + "9" * 5000 + "}}")
    return ["eval", str(run)]


@case("run directories", "metrics.json is damaged: not UTF-8 text")
def eval_metrics_not_utf8(root, mp):
    """`kit eval` on a metrics.json in another encoding"""
    run = trained_run(root)
    (run / "metrics.json").write_bytes('{"test": {"r\xb2": 1}}'.encode("latin-1"))
    return ["eval", str(run)]


@case("run directories", "run.json is damaged: not valid JSON")
def eval_corrupt_run_record(root, mp):
    """`kit eval` on a run whose run.json is not JSON"""
    run = trained_run(root)
    (run / "run.json").write_text("{'status': 'complete'")
    return ["eval", str(run)]


@case("run directories", "run.json is damaged: expected a JSON object, found list")
def predict_run_record_of_wrong_type(root, mp):
    """`kit predict` on a run whose run.json is a JSON list"""
    run = trained_run(root)
    (run / "run.json").write_text("[]")
    return predict(run, root)


@case("run directories", "kit_model.json is damaged: not valid JSON")
def predict_truncated_bundle(root, mp):
    """`kit predict` on a run whose model/kit_model.json was cut short"""
    run = trained_run(root)
    path = run / "model" / "kit_model.json"
    path.write_bytes(path.read_bytes()[:100])
    return predict(run, root)


@case("run directories", "kit_model.json is damaged: 'inputs' should be a dict")
def predict_bundle_of_wrong_types(root, mp):
    """`kit predict` on a kit_model.json whose `inputs` is a string"""
    return predict(edit_bundle(trained_run(root), lambda b: b.update(inputs="tabular")), root)


@case("run directories", "was trained with the input kind 'audio', which no installed plugin provides")
def predict_bundle_with_an_unknown_input_kind(root, mp):
    """`kit predict` on a kit_model.json naming an input kind kit does not have"""
    return predict(edit_bundle(trained_run(root), lambda b: b["inputs"].update(kind="audio")), root)


@case("run directories", "kit_model.json is damaged: its saved config is invalid")
def predict_bundle_with_an_invalid_config(root, mp):
    """`kit predict` on a kit_model.json whose saved config is invalid (`data.train: 5`)"""
    return predict(edit_bundle(trained_run(root), lambda b: b["config"]["data"].update(train=5)), root)


@case("run directories", "inputs.columns should list at most 100000 columns")
def predict_bundle_with_a_million_features(root, mp):
    """`kit predict` on a kit_model.json listing 10^6 feature columns"""
    columns = [{"name": f"c{i}", "type": "number"} for i in range(10**6)]
    return predict(edit_bundle(trained_run(root), lambda b: b["inputs"].update(columns=columns)), root)


@case("run directories", "'features' lists 2 columns where its config gives 3 (missing: 'colour'")
def predict_bundle_missing_a_feature_state(root, mp):
    """`kit predict` on a kit_model.json whose learned feature states lack a column"""
    run = trained_run(root)
    edit_json(run / "model" / "kit_model.json", lambda bundle: bundle["features"].pop() and None)
    return predict(run, root)


@case("run directories", "the learned state of feature 'x1' has mean = nan, not a finite number")
def predict_bundle_with_nan_statistics(root, mp):
    """`kit predict` on a kit_model.json whose feature mean is NaN"""
    return predict(edit_bundle(trained_run(root), lambda b: b["features"][0]["state"].update(mean=float("nan"))), root)


@case("run directories", "the learned state of feature 'colour' has a vocabulary that is not a list of strings")
def predict_bundle_with_numbers_as_categories(root, mp):
    """`kit predict` on a kit_model.json whose category vocabulary holds numbers and lists"""
    return predict(
        edit_bundle(trained_run(root), lambda b: b["features"][2]["state"].update(vocabulary=[1, [2]])), root
    )


@case("run directories", "the learned state of feature 'colour' has a vocabulary with repeated entries")
def predict_bundle_with_repeated_categories(root, mp):
    """`kit predict` on a kit_model.json whose category vocabulary repeats a value"""
    change = lambda b: b["features"][2]["state"].update(vocabulary=["red", "red", "blue"])  # noqa: E731
    return predict(edit_bundle(trained_run(root), change), root)


# ------------------------------------------------------------------ code and links in a run folder


@case("run directories", "was trained with the task 'sentiment', which no installed plugin provides")
def predict_run_naming_its_own_plugin_file(root, mp):
    """A run folder whose kit_model.json names a task from a plugin file inside the run (it is never imported)

    The file would write `pwned` if imported; kit says which plugin the model
    needs and that --plugin FILE loads it once the user trusts it.
    """
    run = trained_run(root)
    (run / "model" / "evil.py").write_text(f"open({str(root / 'pwned')!r}, 'w').write('ran')\n")

    def change(bundle: dict) -> None:
        bundle["task"]["name"] = bundle["config"]["task"] = "sentiment"
        bundle["config"]["plugins"] = [str(run / "model" / "evil.py")]

    return predict(edit_bundle(run, change), root)


@case("run directories", "asks to load 'os.system', which is not a Keras or keras-hub class")
def model_naming_os_system(root, mp):
    """A model.keras whose config names `os.system` as an activation"""
    return predict(edit_keras_config(trained_run(root), naming_function("os", "system")), root)


@case("run directories", "asks to load 'builtins.eval'")
def model_naming_builtins_eval(root, mp):
    """A model.keras whose config names `builtins.eval`"""
    return predict(edit_keras_config(trained_run(root), naming_function("builtins", "eval")), root)


@case("run directories", "asks to load 'subprocess.Popen'")
def model_naming_subprocess_popen(root, mp):
    """A model.keras whose top-level class is `subprocess.Popen`"""

    def change(config: dict) -> dict:
        return {"module": "subprocess", "class_name": "Popen", "config": {"args": ["true"]}, "registered_name": None}

    return predict(edit_keras_config(trained_run(root), change), root)


@case("run directories", "Non-modeling APIs are disallowed")
def model_naming_a_keras_utility(root, mp):
    """A model.keras naming `keras.utils.get_file` (a Keras function that downloads files)"""
    return predict(edit_keras_config(trained_run(root), naming_function("keras.utils", "get_file")), root)


@case("run directories", "tokenizer.json asks to load 'os.system'")
def preprocessor_preset_naming_os_system(root, mp):
    """A run's keras-hub preprocessor preset whose tokenizer.json names `os.system`"""
    run = trained_run(root)
    (run / "model" / "preprocessor").mkdir()
    tokenizer = {"module": "os", "class_name": "system", "config": {"command": "true"}, "registered_name": None}
    (run / "model" / "preprocessor" / "tokenizer.json").write_text(json.dumps(tokenizer))
    return predict(edit_bundle(run, lambda b: b["inputs"].update(preprocessor_dir="preprocessor")), root)


@case("run directories", "needs unsafe deserialisation (it contains Python code, e.g. a Lambda layer)")
def model_needing_unsafe_loading(root, mp):
    """A `model.keras` holding a Lambda layer (Python code); models load in Keras safe mode, `--unsafe` opts out

    A model.keras with a Lambda layer (arbitrary code) loads only with --unsafe.
    """
    import keras

    run = trained_run(root)
    inputs = keras.Input((1,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(run / "model" / "model.keras")
    return predict(run, root)


@case("run directories", "leads outside the run directory (to /dev/zero)")
def model_linked_to_dev_zero(root, mp):
    """A run whose model.keras is a symbolic link to /dev/zero"""
    run = trained_run(root)
    (run / "model" / "model.keras").unlink()
    (run / "model" / "model.keras").symlink_to("/dev/zero")
    return predict(run, root)


@case("run directories", "leads outside the run directory")
def model_linked_outside_the_run(root, mp):
    """A run whose model.keras links to a file outside the run folder"""
    run = trained_run(root)
    outside = root / "elsewhere.keras"
    (run / "model" / "model.keras").rename(outside)
    (run / "model" / "model.keras").symlink_to(outside)
    return predict(run, root)


@case("run directories", "is a symbolic link that loops")
def model_link_loop(root, mp):
    """A run whose model.keras is a symbolic link to itself"""
    run = trained_run(root)
    (run / "model" / "model.keras").unlink()
    (run / "model" / "model.keras").symlink_to("model.keras")
    return predict(run, root)


@case("run directories", "is not a plain file (a device, pipe or socket)")
def model_is_a_fifo(root, mp):
    """A run whose model.keras is a named pipe (reading it would wait forever)"""
    run = trained_run(root)
    (run / "model" / "model.keras").unlink()
    os.mkfifo(run / "model" / "model.keras")
    return predict(run, root)


@case("run directories", "backbone.vocabulary_file is '/etc/passwd'; it must name something inside")
def vocabulary_outside_the_model_folder(root, mp):
    """A kit_model.json whose backbone's vocabulary file is an absolute path elsewhere"""
    return predict(edit_bundle(trained_run(root), lambda b: b["backbone"].update(vocabulary_file="/etc/passwd")), root)


@case("run directories", "backbone.preprocessor_dir is '../../..'; it must name something inside")
def preprocessor_folder_outside_the_run(root, mp):
    """A kit_model.json whose preprocessor folder climbs out of the run with `..`"""
    return predict(edit_bundle(trained_run(root), lambda b: b["backbone"].update(preprocessor_dir="../../..")), root)


@case("run directories", "would unpack to 300 MB (2 files) from 0.3 MB: it is not a model kit wrote (a zip bomb?)")
def model_is_a_zip_bomb(root, mp):
    """A model.keras that unpacks a thousandfold (a zip bomb)"""
    run = trained_run(root)
    with zipfile.ZipFile(run / "model" / "model.keras", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", bytes(300 * 2**20))
    return predict(run, root)


@case("run directories", "is not a Keras model file (a zip archive holding config.json): BadZipFile")
def model_cut_short(root, mp):
    """A model.keras cut to half its size (an interrupted copy)"""
    run = trained_run(root)
    path = run / "model" / "model.keras"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return predict(run, root)


@case("run directories", "do not belong together: the model does not take the inputs the bundle describes")
def model_from_another_run(root, mp):
    """A run whose model.keras was copied from another run (other input columns)"""
    import keras

    run = trained_run(root)
    inputs = keras.Input((3,), name="pixels")
    keras.Model(inputs, keras.layers.Dense(1)(inputs)).save(run / "model" / "model.keras")
    return predict(run, root)


@case("run directories", "the model gives 1 outputs per example but the task expects 2")
def model_with_fewer_outputs_than_targets(root, mp):
    """A kit_model.json naming two targets for a model trained on one"""

    def change(bundle: dict) -> None:
        bundle["config"]["data"]["target"] = ["y", "y2"]
        bundle["targets"].append({"column": "y2", "state": bundle["targets"][0]["state"]})

    return predict(edit_bundle(trained_run(root), change), root)


# ------------------------------------------------------------------ where predict writes


@case("run directories", "would overwrite the input")
def predict_output_is_its_input(root, mp):
    """`kit predict RUN data.csv -o data.csv`: the output is the input"""
    run, data = trained_run(root), rows(root)
    return ["predict", str(run), str(data), "-o", str(data)]


@case("run directories", "would overwrite the input")
def predict_output_links_to_its_input(root, mp):
    """`-o` is a symbolic link to the input file"""
    run, data = trained_run(root), rows(root)
    (root / "out.csv").symlink_to(data)
    return ["predict", str(run), str(data), "-o", str(root / "out.csv")]


@case("run directories", "would overwrite the input")
def predict_output_is_a_hard_link_to_its_input(root, mp):
    """`-o` is a hard link to the input file"""
    run, data = trained_run(root), rows(root)
    os.link(data, root / "same.csv")
    return ["predict", str(run), str(data), "-o", str(root / "same.csv")]


@case("run directories", "(it is inside that folder)")
def predict_output_inside_its_input_folder(root, mp):
    """`-o` inside the folder being predicted"""
    run = trained_run(root)
    (root / "texts" / "pos").mkdir(parents=True)
    (root / "texts" / "pos" / "a.txt").write_text("good")
    return ["predict", str(run), str(root / "texts"), "-o", str(root / "texts" / "predictions.csv")]


@case("run directories", "is inside the run directory")
def predict_output_into_a_run(root, mp):
    """`-o RUN/history.jsonl`: predictions written over a finished run's file"""
    run = trained_run(root)
    return predict(run, root, "-o", str(run / "history.jsonl"))


@case("run directories", "is inside the run directory")
def predict_output_into_another_run(root, mp):
    """`-o` inside another run's folder (`OTHER_RUN/logs/predictions.csv`)"""
    run = trained_run(root)
    other = root / "other"
    shutil.copytree(run, other)
    return predict(run, root, "-o", str(other / "logs" / "predictions.csv"))


@case("run directories", "the folder")
def predict_output_folder_missing(root, mp):
    """`-o missing_dir/x.csv`: the output's folder does not exist"""
    return predict(trained_run(root), root, "-o", str(root / "missing_dir" / "x.csv"))


@case("run directories", "is a folder. Give a file name")
def predict_output_is_a_folder(root, mp):
    """`-o` naming an existing folder"""
    (root / "results").mkdir()
    return predict(trained_run(root), root, "-o", str(root / "results"))


@case("run directories", "is not a plain file (a link, device or pipe)")
def predict_output_is_a_device(root, mp):
    """`-o full.csv` where full.csv links to /dev/full"""
    (root / "full.csv").symlink_to("/dev/full")
    return predict(trained_run(root), root, "-o", str(root / "full.csv"))


@case("run directories", "'.parquet' is neither", exit_code=2)
def predict_output_parquet(root, mp):
    """`-o predictions.parquet`: a format kit does not write"""
    return predict(trained_run(root), root, "-o", str(root / "predictions.parquet"))


@case("run directories", "already exists and is not a predictions file kit wrote; kit will not overwrite it")
def predict_output_over_a_data_file(root, mp):
    """`-o` naming an existing data file of the user's (not an earlier predictions file)"""
    make_tabular(root / "mine", rows=5)
    return predict(trained_run(root), root, "-o", str(root / "mine" / "table.csv"))


@case("run directories", "the folder 'missing\\ndir' does not exist")
def predict_output_with_a_newline(root, mp):
    """`-o` with a line break in a folder name that does not exist (shown quoted, on one line)"""
    return predict(trained_run(root), root, "-o", "missing\ndir/x.csv")


# ------------------------------------------------------------------ where export writes


@case("run directories", "exists and is not a folder; kit exports into a new folder")
def export_to_an_existing_file(root, mp):
    """`kit export RUN -o EXISTING_FILE`"""
    return ["export", str(trained_run(root)), "-o", str(rows(root))]


@case("run directories", "already exists and is not empty; kit will not overwrite it")
def export_to_a_folder_in_use(root, mp):
    """`kit export -o` a folder that holds files"""
    return ["export", str(trained_run(root)), "-o", str(rows(root).parent)]


@case("run directories", "is the run directory itself")
def export_onto_the_run(root, mp):
    """`kit export RUN --format saved_model -o RUN`"""
    run = trained_run(root)
    return ["export", str(run), "--format", "saved_model", "-o", str(run)]


@case("run directories", "is inside the run directory")
def export_into_the_model_folder(root, mp):
    """`kit export RUN -o RUN/model/v2`: the export inside the model it reads"""
    run = trained_run(root)
    return ["export", str(run), "-o", str(run / "model" / "v2")]


@case("run directories", "the folder")
def export_into_a_missing_folder(root, mp):
    """`kit export RUN -o missing/dir/export`"""
    return ["export", str(trained_run(root)), "-o", str(root / "missing" / "dir" / "export")]


@case("run directories", "has no keras-hub backbone, so there is no preset to write")
def export_preset_of_a_tabular_run(root, mp):
    """`kit export --format preset` of a tabular run (nothing is left behind)"""
    return ["export", str(trained_run(root)), "--format", "preset", "-o", str(root / "preset")]


@case("run directories", "does not exist (from --plugin)")
def predict_with_a_missing_plugin_file(root, mp):
    """`kit predict --plugin` naming a file that does not exist"""
    return predict(trained_run(root), root, "--plugin", str(root / "nope.py"))


@case("run directories", "is empty: expected a header line")
def predict_an_empty_file(root, mp):
    """`kit predict RUN empty.csv`: an input with no rows and no header"""
    (root / "empty.csv").write_text("")
    return ["predict", str(trained_run(root)), str(root / "empty.csv")]


@case("run directories", "model/kit_model.json is missing although run.json says the run is complete")
def predict_run_without_its_model_folder(root, mp):
    """`kit predict` on a complete run whose model/ folder was deleted"""
    run = trained_run(root)
    shutil.rmtree(run / "model")
    return predict(run, root)


@case("run directories", "run.json leads outside the run directory (to /dev/zero)")
def eval_run_record_linked_to_dev_zero(root, mp):
    """`kit eval` on a run whose run.json is a symbolic link to /dev/zero (reading it would never end)"""
    run = trained_run(root)
    (run / "run.json").unlink()
    (run / "run.json").symlink_to("/dev/zero")
    return ["eval", str(run)]


@case("run directories", "kit export checks the exported model on examples of the run's own data")
def export_a_run_whose_data_is_gone(root, mp):
    """`kit export` of a run sent without its training data (the export's check needs a few examples)"""
    run = trained_run(root)
    edit_bundle(run, lambda b: b["config"]["data"].update(train=str(root / "gone.csv")))
    return ["export", str(run), "-o", str(root / "export")]


@case("run directories", "Permission denied writing")
def predict_output_on_a_read_only_disk(root, mp):
    """`-o` on a read-only disk (simulated `EROFS`): the message names the file asked for"""

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(root / ".p.csv.kit-writing-1"))

    mp.setattr("kit.outputs._create", read_only)
    return predict(trained_run(root), root, "-o", str(root / "p.csv"))


@case("run directories", "should be an object with a 'column' name (text without control characters)")
def predict_bundle_with_escape_codes_in_a_column(root, mp):
    """A kit_model.json whose column name holds a terminal escape sequence (it would rewrite the user's screen)"""
    return predict(edit_bundle(trained_run(root), lambda b: b["features"][0].update(column="x1\x1b[2J")), root)


@case("run directories", "config.json asks to load 'os.system'")
def fine_tune_from_a_tampered_run(root, mp):
    """`model.backbone: RUN` where the run's backbone preset names `os.system` (a run someone sent you)"""
    from tests.conftest import project, write_csv

    run = trained_run(root)
    (run / "model" / "preset").mkdir()
    system = {"module": "os", "class_name": "system", "config": {}, "registered_name": "os>system"}
    (run / "model" / "preset" / "config.json").write_text(json.dumps(system))
    texts = write_csv(
        root / "texts.csv", ["text", "label"], [[f"review {i}", "pos" if i % 2 else "neg"] for i in range(40)]
    )
    config = f"task: classification\ndata:\n  train: {texts}\nmodel:\n  backbone: {run}\ntrain:\n  epochs: 1\n"
    return ["run", str(project(root / "p", config))]


@case("run directories", "is a link to a folder; kit writes none into a model folder")
def export_a_model_folder_holding_a_link_loop(root, mp):
    """`kit export` of a run whose model/ holds `loop -> .` (copying it would fill the disk)"""
    run = trained_run(root)
    (run / "model" / "loop").symlink_to(".")
    return ["export", str(run), "-o", str(root / "export")]
