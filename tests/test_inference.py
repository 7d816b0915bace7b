"""Using a trained run someone may have sent you: nothing in it runs as code, nothing of it is written over,
and eval/predict/export write whole outputs or none.

One tiny regression run is trained per module; each test works on its own copy.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kit import exports, runfiles
from kit import inference as saved
from kit.cli import cli
from kit.errors import KitError, ModelError, RunDirError
from tests.conftest import make_tabular, project, trained_run

REGRESSION = "task: regression\ndata:\n  train: {data}\n  target: y\nmodel:\n  hidden_units: [8]\ntrain:\n  epochs: 1\n  verbose: 0\n"  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    folder = project(root / "p", REGRESSION.format(data=make_tabular(root)))
    return trained_run(folder, root / "cache")


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the trained run."""
    return Path(shutil.copytree(trained, tmp_path / "run", symlinks=True))


@pytest.fixture
def rows(tmp_path) -> Path:
    return make_tabular(tmp_path / "input", rows=12)


def state(folder: Path) -> dict[str, tuple[int, str]]:
    """Every entry under `folder` with its modification time and content hash (folders too)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        found[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, digest)
    return found


def ok(runner, args):
    result = runner.invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def edit_bundle(run: Path, change) -> None:
    path = run / "model" / "kit_model.json"
    bundle = json.loads(path.read_text())
    change(bundle)
    path.write_text(json.dumps(bundle))


# ------------------------------------------------------------------ no code from a run folder


def test_plugins_named_by_a_run_folder_are_never_imported(runner, run, rows, tmp_path):
    marker = tmp_path / "pwned"
    (run / "model" / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    edit_bundle(run, lambda b: b["config"].update(plugins=[str(run / "model" / "evil.py"), "evil"]))
    for args in (["predict", run, rows], ["eval", run, "--data", rows], ["export", run, "-o", tmp_path / "e"]):
        ok(runner, args)
    assert not marker.exists()
    assert "kit_project_plugin_evil" not in sys.modules


PLUGIN = """
import kit
from kit_plugins.regression import Regression

open({marker!r}, "w").write("imported")


class MyRegression(Regression):
    name = "my_regression"


@kit.hookimpl
def register_tasks(register):
    register(MyRegression)
"""


def test_a_project_plugin_loads_only_when_named_on_the_command_line(runner, run, rows, tmp_path):
    marker = tmp_path / "imported"
    plugin = tmp_path / "my_task.py"
    plugin.write_text(PLUGIN.format(marker=str(marker)))

    def change(bundle):
        bundle["task"]["name"] = bundle["config"]["task"] = "my_regression"
        bundle["config"]["plugins"] = [str(plugin)]

    edit_bundle(run, change)
    result = runner.invoke(cli, ["predict", str(run), str(rows)])
    assert result.exit_code == 1 and "pass that file with --plugin FILE" in result.output
    assert not marker.exists()
    output = ok(runner, ["predict", run, rows, "--plugin", plugin]).output
    assert marker.exists() and len([line for line in output.splitlines() if line.startswith('{"line"')]) == 12
    sys.modules.pop("kit_project_plugin_my_task", None)


def test_the_missing_plugin_is_named_from_run_json(runner, run, rows):
    edit_bundle(
        run,
        lambda b: b["task"].update(name="sentiment", plugin="kit-sentiment") or b["config"].update(task="sentiment"),
    )
    record = json.loads((run / "run.json").read_text())
    record.update(task_plugin="kit-sentiment", plugins={"kit-sentiment": "2.1"})
    (run / "run.json").write_text(json.dumps(record))
    result = runner.invoke(cli, ["predict", str(run), str(rows)])
    assert result.exit_code == 1
    assert "no installed plugin provides (it came from the plugin 'kit-sentiment' '2.1')" in result.output


@pytest.mark.parametrize(
    "node",
    [
        {"module": "os", "class_name": "function", "config": "system", "registered_name": "function"},
        {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"},
        {"module": "builtins", "class_name": "function", "config": "__import__", "registered_name": None},
        {"module": "subprocess", "class_name": "Popen", "config": {}, "registered_name": None},
        {"module": "posix", "class_name": "system", "config": {}, "registered_name": "os>system"},
        {"module": "tests.harness.test_saved", "class_name": "Scale", "config": {}, "registered_name": None},
    ],
)
def test_classes_outside_keras_are_refused(node):
    config = {"module": "keras.layers", "class_name": "Dense", "config": {"activation": {"deep": [node]}}}
    with pytest.raises(ModelError, match="kit refuses it: loading a model must never run other code"):
        runfiles.check_classes(config, "model.keras")


def test_keras_builtins_and_registered_classes_are_trusted():
    import keras

    @keras.saving.register_keras_serializable(package="kit_test")
    class Scale(keras.layers.Layer):
        pass

    trusted = [
        {"module": "builtins", "class_name": "function", "config": "relu", "registered_name": "function"},
        {"module": "keras_hub.src.models.gpt2.gpt2_backbone", "class_name": "GPT2Backbone", "registered_name": "x"},
        {"module": "tests.harness.test_saved", "class_name": "Scale", "registered_name": "kit_test>Scale"},
        {"class_name": "__keras_tensor__", "config": {}},
        {"class_name": "eval", "module": None},
    ]
    runfiles.check_classes(trusted, "model.keras")


def test_the_trained_model_passes_every_check(run):
    import zipfile

    config = json.loads(zipfile.ZipFile(run / "model" / "model.keras").read("config.json"))
    runfiles.check_classes(config, "model.keras")


def test_module_constants_match_the_run_layout():
    from kit.harness import rundir
    from kit.rundir import RunDir

    assert (runfiles.RUN_FILE, runfiles.CONFIG_COPY) == (rundir.RUN_FILE, rundir.CONFIG_COPY)
    assert (runfiles.BUNDLE_FILE, runfiles.MODEL_FILE) == (RunDir.BUNDLE, RunDir.MODEL_FILE)


# ------------------------------------------------------------------ nothing of a run is written over


def test_reading_a_run_writes_nothing_into_it(runner, run, rows, tmp_path):
    """eval, predict and export elsewhere work on a read-only run: they create or change nothing in it."""
    before = state(run)
    ok(runner, ["eval", run])
    ok(runner, ["eval", run, "--data", rows])
    ok(runner, ["predict", run, rows, "-o", tmp_path / "p.csv"])
    ok(runner, ["export", run, "--format", "saved_model", "-o", tmp_path / "sm"])
    assert state(run) == before


def test_a_run_reached_through_a_link_works(runner, run, rows, tmp_path):
    (tmp_path / "latest").symlink_to(run)
    ok(runner, ["predict", tmp_path / "latest", rows])


def test_predictions_replace_an_earlier_predictions_file(runner, run, rows, tmp_path):
    out = tmp_path / "p.csv"
    ok(runner, ["predict", run, rows, "-o", out])
    first = out.read_text()
    ok(runner, ["predict", run, rows, "-o", out])  # the same command again
    assert out.read_text() == first and first.startswith("line,y\n")
    assert sorted(os.listdir(tmp_path)) == sorted(["input", "p.csv", "run"])


def interrupt_after(count: int, stop: BaseException):
    original = saved.TrainedModel.predict_rows

    def predict_rows(self, source):
        for number, row in enumerate(original(self, source)):
            if number == count:
                raise stop
            yield row

    return predict_rows


def test_interrupted_predict_leaves_the_old_file(runner, run, rows, tmp_path, monkeypatch):
    out = tmp_path / "p.jsonl"
    out.write_text('{"line": 2, "y": 0.0}\n')
    monkeypatch.setattr(saved.TrainedModel, "predict_rows", interrupt_after(5, KeyboardInterrupt()))
    result = runner.invoke(cli, ["predict", str(run), str(rows), "-o", str(out)])
    assert result.exit_code == 130 and "no partial output was saved" in result.output
    assert out.read_text() == '{"line": 2, "y": 0.0}\n'
    assert sorted(os.listdir(tmp_path)) == ["input", "p.jsonl", "run"]


def test_disk_full_while_predicting_leaves_nothing(runner, run, rows, tmp_path, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(saved.TrainedModel, "predict_rows", interrupt_after(3, full))
    result = runner.invoke(cli, ["predict", str(run), str(rows), "-o", str(tmp_path / "p.csv")])
    assert result.exit_code == 1 and "The disk is full" in result.output and "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path)) == ["input", "run"]


def test_predictions_to_a_closed_pipe_stop_quietly(monkeypatch):
    read, write = os.pipe()
    os.close(read)
    stream = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", stream)
    assert saved.write_predictions(iter([{"line": n, "y": 1.0} for n in range(10_000)]), None) == 0
    stream.close()


def test_csv_needs_the_same_fields_on_every_row(tmp_path):
    rows = iter([{"line": 2, "label": "a"}, {"line": 3, "label": "b", "extra": 1}])
    with pytest.raises(KitError, match="do not fit one CSV table. Write JSON lines instead"):
        saved.write_predictions(rows, tmp_path / "p.csv")
    assert os.listdir(tmp_path) == []


def test_interrupted_export_can_be_redone(runner, run, tmp_path, monkeypatch):
    def stop(*args):
        raise KeyboardInterrupt

    from kit.exports.saved_model import SavedModelExporter

    monkeypatch.setattr(SavedModelExporter, "write", stop)
    result = runner.invoke(cli, ["export", str(run), "--format", "saved_model"])
    assert result.exit_code == 130 and "no partial output was saved" in result.output
    assert not (run / "export").exists()
    monkeypatch.undo()
    ok(runner, ["export", run, "--format", "saved_model"])  # the same command
    assert (run / "export" / "saved_model" / "saved_model.pb").is_file()
    assert [p.name for p in (run / "export").iterdir()] == ["saved_model"]


def test_failed_export_check_leaves_nothing(runner, run, tmp_path, monkeypatch):
    def differs(*args):
        raise ModelError("does not reproduce the run's predictions")

    monkeypatch.setattr(exports, "_check_reproduced", differs)
    result = runner.invoke(cli, ["export", str(run), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "does not reproduce" in result.output
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_refused_preset_leaves_nothing(runner, run, tmp_path):
    result = runner.invoke(cli, ["export", str(run), "--format", "preset"])
    assert result.exit_code == 1 and "no keras-hub backbone" in result.output
    assert not (run / "export").exists()


# ------------------------------------------------------------------ runs that did not finish


def test_unfinished_run_is_used_with_a_warning(runner, run, rows, tmp_path):
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "status": "running"}))
    result = ok(runner, ["predict", run, rows])
    assert "kit: warning:" in result.output and "is not a finished run (run.json status: 'running')" in result.output
    ok(runner, ["export", run, "-o", tmp_path / "e"])
    assert json.loads((tmp_path / "e" / "export.json").read_text())["run_status"] == "running"


# ------------------------------------------------------------------ property: any damage is a KitError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(value=json_values)
def test_any_metrics_json_is_read_or_refused(tmp_path_factory, value):
    run = tmp_path_factory.mktemp("run")
    (run / "run.json").write_text('{"status": "complete"}')
    (run / "metrics.json").write_text(json.dumps(value))
    try:
        metrics = runfiles.read_metrics(run)
    except RunDirError:
        return
    assert all(isinstance(v, dict) for v in metrics.values())


def slots(value) -> list[tuple[object, object]]:
    """(container, key) for every value nested inside a JSON value."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else []
        for key, child in pairs:
            found.append((item, key))
            stack.append(child)
    return found


@FUZZ
@given(data=st.data())
def test_any_damage_to_kit_model_json_is_refused_or_harmless(trained, tmp_path_factory, data):
    """Replace one value anywhere in kit_model.json: reading it gives a bundle and a config, or a KitError."""
    bundle = json.loads((trained / "model" / "kit_model.json").read_text())
    container, key = data.draw(st.sampled_from(slots(bundle)))
    container[key] = data.draw(json_values)
    run = tmp_path_factory.mktemp("run")
    (run / "model").mkdir()
    (run / "model" / "kit_model.json").write_text(json.dumps(bundle))
    try:
        from kit.assembly import saved_reference

        meta = runfiles.read_bundle(run, run / "model")
        runfiles.saved_config(meta, run / "model" / "kit_model.json", saved_reference(meta))
    except KitError:
        pass


@FUZZ
@given(content=st.binary(max_size=200))
def test_any_bytes_as_a_model_file_are_refused(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        runfiles.check_keras_archive(path)


def test_paths_in_a_saved_config_are_never_written(runner, run, rows, tmp_path):
    """runs_dir, tfds_data_dir and plugin paths from a run folder lead nowhere: nothing is created there."""
    elsewhere = tmp_path / "elsewhere"

    def change(bundle):
        bundle["config"].update(runs_dir=str(elsewhere / "runs"), plugins=[str(elsewhere / "p.py")])
        bundle["config"]["data"]["tfds_data_dir"] = str(elsewhere / "tfds")

    edit_bundle(run, change)
    ok(runner, ["predict", run, rows])
    ok(runner, ["eval", run, "--data", rows])
    ok(runner, ["export", run, "-o", tmp_path / "e"])
    assert not elsewhere.exists()


def test_preset_json_that_never_ends_is_refused(tmp_path):
    """A backbone preset (model.backbone: RUN) whose tokenizer.json links to /dev/zero or is a pipe."""
    (tmp_path / "tokenizer.json").symlink_to("/dev/zero")
    with pytest.raises(ModelError, match="not a plain file"):
        runfiles.check_preset_files(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    os.mkfifo(tmp_path / "tokenizer.json")
    with pytest.raises(ModelError, match="not a plain file"):
        runfiles.check_preset_files(tmp_path)
