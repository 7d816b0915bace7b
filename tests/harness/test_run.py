"""End to end: `kit run` -> run directory -> eval, predict, export, on each input kind.

These train real (small) models, so they take seconds each.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from kit.cli import cli
from tests.conftest import make_tabular, project

pytestmark = pytest.mark.slow

REGRESSION = """task: regression
data:
  train: {train}
  target: y
model:
  hidden_units: [32]
  dropout: 0.0
train:
  epochs: 8
  learning_rate: 0.01
  verbose: 0
"""


def run_ok(runner, args):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    """One trained tabular regression run shared by the tests that only read it."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("regression")
    data = make_tabular(root)
    folder = project(root / "proj", REGRESSION.format(train=data))
    run_ok(CliRunner(), ["run", str(folder)])
    return folder / "runs" / "run-1"


def test_run_directory_holds_everything(regression_run):
    names = {p.name for p in regression_run.iterdir()}
    assert {
        "config.yaml",
        "run.json",
        "history.jsonl",
        "metrics.json",
        "curves.png",
        "logs",
        "checkpoints",
        "model",
    } <= names
    assert "backup" not in names  # removed once training completed
    record = json.loads((regression_run / "run.json").read_text())
    assert record["status"] == "complete"
    assert record["versions"]["tensorflow"] and record["seed"] == 42
    assert record["data"]["train"]["rows"] > 250 and record["data"]["fingerprint"]["train"]
    history = [json.loads(line) for line in (regression_run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["loss"] < history[0]["loss"]
    metrics = json.loads((regression_run / "metrics.json").read_text())
    assert set(metrics) == {"validation", "test"}
    assert metrics["test"]["r2"] > 0.9  # y is a simple function of the features
    assert len(list((regression_run / "checkpoints").glob("epoch-*.weights.h5"))) == 3  # keep_checkpoints


def test_resolved_config_reruns_identically(regression_run, runner):
    """Feeding config.yaml back trains a new run with identical results (CPU determinism)."""
    run_ok(runner, ["run", str(regression_run / "config.yaml")])
    second = regression_run.parent / "run-2"
    first_metrics = json.loads((regression_run / "metrics.json").read_text())
    assert json.loads((second / "metrics.json").read_text()) == first_metrics


def test_complete_run_dir_is_refused(regression_run, runner):
    before = (regression_run / "metrics.json").read_text()
    result = runner.invoke(cli, ["run", str(regression_run / "config.yaml"), "--run-dir", str(regression_run)])
    assert result.exit_code == 1
    assert "already holds a complete run" in result.output
    assert (regression_run / "metrics.json").read_text() == before


def test_foreign_folder_and_other_task_are_refused(regression_run, runner, tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    result = runner.invoke(cli, ["run", str(regression_run / "config.yaml"), "--run-dir", str(tmp_path / "stuff")])
    assert result.exit_code == 1 and "is not a kit run directory" in result.output
    config = yaml.safe_load((regression_run / "config.yaml").read_text())
    config["task"] = "classification"
    config["data"]["target"] = ["colour"]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(cli, ["run", str(tmp_path / "other.yaml"), "--run-dir", str(regression_run)])
    assert result.exit_code == 1 and "holds a run of task 'regression'" in result.output


def test_eval_predict_export(regression_run, runner, tmp_path):
    metrics = json.loads(run_ok(runner, ["eval", str(regression_run)]).output)
    assert metrics["test"]["r2"] > 0.9
    new = tmp_path / "new.csv"
    new.write_text("x1,x2,colour\n0.5,0.0,red\n0.0,0.5,purple\n")
    lines = predictions(runner, [str(regression_run), str(new)])
    assert [p["line"] for p in lines] == [2, 3]
    assert lines[0]["y"] == pytest.approx(2.5, abs=0.5)  # 3*0.5 + 1 (red)
    out = tmp_path / "out.csv"
    run_ok(runner, ["predict", str(regression_run), str(new), "-o", str(out)])
    assert out.read_text().splitlines()[0] == "line,y"
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("x1,x2,colour,y\n0.5,0.0,red,2.5\n-0.5,0.5,blue,-2.5\n0.2,0.2,green,-0.8\n")
    result = _json_tail(run_ok(runner, ["eval", str(regression_run), "--data", str(labelled)]).output)
    assert result["data"]["examples"] == 3 and result["data"]["mae"] < 0.5
    for fmt in ("keras", "saved_model"):
        run_ok(runner, ["export", str(regression_run), "--format", fmt, "-o", str(tmp_path / fmt)])
        assert json.loads((tmp_path / fmt / "export.json").read_text())["checked_examples"] > 0
    result = runner.invoke(cli, ["export", str(regression_run), "--format", "keras", "-o", str(tmp_path / "keras")])
    assert result.exit_code == 1 and "will not overwrite" in result.output
    result = runner.invoke(cli, ["export", str(regression_run), "--format", "preset", "-o", str(tmp_path / "p")])
    assert result.exit_code == 1 and "has no keras-hub backbone" in result.output
    assert not (tmp_path / "p").exists()


def predictions(runner, args) -> list[dict]:
    output = run_ok(runner, ["predict", *args]).output
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _json_tail(output: str) -> dict:
    return json.loads(output[output.index("{") :])


def test_predict_bad_row_reports_line(regression_run, runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2,colour\n0.5,zero,red\n")
    result = runner.invoke(cli, ["predict", str(regression_run), str(bad)])
    assert result.exit_code == 1
    assert "bad.csv, line 2: column 'x2': 'zero' is not a number" in result.output


def test_text_classification_end_to_end(runner, text_csv, tmp_path):
    folder = project(
        tmp_path / "text",
        f"task: classification\ndata:\n  train: {text_csv}\nmodel:\n  sequence_length: 16\n  vocabulary_size: 200\n"
        # 8 epochs of 6 steps: with 4, some seeds' shuffles still predict one class (AUC 1, accuracy ~0.5).
        "train:\n  epochs: 8\n  learning_rate: 0.002\n  verbose: 0\n",
    )
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "auc"} <= set(metrics["test"])
    assert metrics["test"]["accuracy"] > 0.7
    confusion = json.loads((run_dir / "confusion_test.json").read_text())
    assert confusion["labels"] == ["neg", "pos"] and (run_dir / "confusion_test.png").is_file()
    vocabulary = (run_dir / "model" / "preprocessor" / "assets" / "tokenizer" / "vocabulary.txt").read_text()
    assert vocabulary.startswith("[PAD]\n[UNK]")  # the learned WordPiece vocabulary, in keras-hub's preset layout
    new = tmp_path / "new.jsonl"
    new.write_text('{"text": "a wonderful delightful film"}\n{"text": "dull and boring plot"}\n')
    lines = predictions(runner, [str(run_dir), str(new)])
    assert [p["label"] for p in lines] == ["pos", "neg"]
    assert sum(lines[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    run_ok(runner, ["export", str(run_dir), "--format", "saved_model", "-o", str(tmp_path / "sm")])


def test_image_folder_classification(runner, tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("bright", 210)):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(rng.normal(level, 25, (12, 12, 1)), 0, 255).astype("uint8")
            tf.io.write_file(str(tmp_path / "images" / label / f"{i}.png"), tf.io.encode_png(pixels))
    folder = project(
        tmp_path / "img",
        f"task: classification\ndata:\n  train: {tmp_path / 'images'}\n  image_size: [12, 12]\n  batch_size: 8\n"
        "train:\n  epochs: 3\n  verbose: 0\n",
    )
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    assert json.loads((run_dir / "run.json").read_text())["inputs"] == "image"
    lines = predictions(runner, [str(run_dir), str(tmp_path / "images")])
    assert len(lines) == 80
    accuracy = np.mean(
        [p["label"] == ("bright" if p["line"] <= 40 else "dark") for p in lines]
    )  # sorted: bright/ first
    assert accuracy > 0.9
    run_ok(runner, ["export", str(run_dir), "--format", "saved_model", "-o", str(tmp_path / "sm")])


def test_tfds_source_from_a_prepared_data_dir(runner, tmp_path):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (200,)).astype("float32")
    examples = tf.data.Dataset.from_tensor_slices({"x": x, "y": 2 * x})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="kit_toy",
        version="1.0.0",
        features=tfds.features.FeaturesDict({"x": tf.float32, "y": tf.float32}),
        split_datasets={"train": examples},
        config=None,
        data_dir=str(tmp_path / "tfds"),
    )
    folder = project(
        tmp_path / "p",
        f"task: regression\ndata:\n  train: tfds:kit_toy\n  target: y\n  tfds_data_dir: {tmp_path / 'tfds'}\n"
        "train:\n  epochs: 2\n  verbose: 0\n",
    )
    run_ok(runner, ["run", str(folder)])
    record = json.loads((folder / "runs" / "run-1" / "run.json").read_text())
    assert (
        record["data"]["train"]["rows"] + record["data"]["validation"]["rows"] + record["data"]["test"]["rows"] == 200
    )


def test_tfds_not_prepared_says_what_to_do(runner, tmp_path, tabular_csv):
    folder = project(
        tmp_path / "p", f"task: classification\ndata:\n  train: tfds:mnist\n  tfds_data_dir: {tmp_path / 'empty'}\n"
    )
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert "is not prepared in" in result.output and "tfds build mnist" in result.output


def test_keras_dataset_missing_says_what_to_do(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    import kit_plugins.sources as sources

    monkeypatch.setitem(
        sources.KERAS_DATASETS["fashion_mnist"], "debian", ("dataset-fashion-mnist", str(tmp_path / "no"))
    )
    folder = project(tmp_path / "p", "task: classification\ndata:\n  train: keras:fashion_mnist\n")
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert "apt-get install dataset-fashion-mnist" in result.output


def test_nan_loss_stops_with_advice(runner, tmp_path):
    data = make_tabular(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "breaks.py").write_text(
        "import keras, kit\n"
        "class Break(keras.callbacks.Callback):\n"
        "    def on_train_batch_begin(self, batch, logs=None):\n"
        "        if self.model.optimizer.iterations.numpy() == 12:\n"
        "            self.model.trainable_weights[-1].assign(self.model.trainable_weights[-1] * float('nan'))\n"
        "@kit.hookimpl\n"
        "def register_callbacks(register, run):\n"
        "    register(Break())\n"
    )
    folder = project(tmp_path / "p", REGRESSION.format(train=data) + "plugins: [breaks.py]\n")
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1, result.output
    assert "the loss became nan at epoch 2, batch 3" in result.output.lower()
    assert "lower train.learning_rate" in result.output and "same config fails the same way" in result.output
    run_dir = folder / "runs" / "run-1"
    assert not (run_dir / "metrics.json").exists()
    # Stopped at once: the broken epoch is neither validated nor checkpointed, the last good state is kept.
    assert [json.loads(line)["epoch"] for line in (run_dir / "history.jsonl").read_text().splitlines()] == [1]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("epoch-*")) == ["epoch-001.weights.h5"]
    assert [p.name for p in (run_dir / "backup").glob("step-*")] == ["step-000000010"]


def test_interrupted_run_resumes(runner, tmp_path):
    """A run killed after epoch 2 resumes from its backup when the same command runs again."""
    data = make_tabular(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "crash.py").write_text(
        "import os, signal, keras, kit\n"
        "class Crash(keras.callbacks.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        if epoch == 1 and os.environ.get('KIT_TEST_CRASH'):\n"
        "            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C\n"
        "@kit.hookimpl\n"
        "def register_callbacks(register, run):\n"
        "    register(Crash())\n"
    )
    folder = project(
        tmp_path / "p", REGRESSION.format(train=data).replace("epochs: 8", "epochs: 4") + "plugins: [crash.py]\n"
    )
    result = runner.invoke(cli, ["run", str(folder)], env={"KIT_TEST_CRASH": "1"})
    assert result.exit_code == 130
    assert not (folder / "runs" / "run-1" / "metrics.json").exists()
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    assert not (folder / "runs" / "run-2").exists()
    assert json.loads((run_dir / "run.json").read_text())["resumed"] == 1
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_text_regression_with_two_targets(runner, tmp_path):
    """Regression on text inputs, predicting two numbers at once, reported per target in original units."""
    import random

    from tests.conftest import POSITIVE, write_csv

    rng = random.Random(3)
    rows = []
    for _ in range(200):
        words = rng.sample(POSITIVE, rng.randint(1, 4))
        rows.append([" ".join(words), str(10 * len(words)), str(100 - len(words))])
    data = write_csv(tmp_path / "scores.csv", ["text", "stars", "price"], rows)
    folder = project(
        tmp_path / "p",
        f"task: regression\ndata:\n  train: {data}\n  target: [stars, price]\nmodel:\n  sequence_length: 8\n"
        "  vocabulary_size: 100\ntrain:\n  epochs: 3\n  learning_rate: 0.003\n  verbose: 0\n",
    )
    run_ok(runner, ["run", str(folder)])
    metrics = json.loads((folder / "runs" / "run-1" / "metrics.json").read_text())["test"]
    assert {"mae_stars", "mae_price", "r2_stars", "r2_price"} <= set(metrics)
    new = tmp_path / "new.csv"
    new.write_text("text\nwonderful\n")
    (prediction,) = predictions(runner, [str(folder / "runs" / "run-1"), str(new)])
    assert set(prediction) == {"line", "stars", "price"}
    assert 0 < prediction["stars"] < 60 and 90 < prediction["price"] < 105


def test_malformed_data_leaves_no_run_behind(runner, tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("x1,x2,colour,y\n1,2,red,3\n1,2,red,three\n")
    folder = project(tmp_path / "p", REGRESSION.format(train=data))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1 and "t.csv, line 3: column 'y': 'three' is not a number" in result.output
    assert not (folder / "runs").exists()


def test_predict_input_missing_a_column(regression_run, runner, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("x1,colour\n0.5,red\n")
    result = runner.invoke(cli, ["predict", str(regression_run), str(other)])
    assert result.exit_code == 1
    assert (
        "Column 'x2' (an input of this model) is not in" in result.output
        and "Its columns are: x1, colour" in result.output
    )


@pytest.mark.parametrize("jit", ["auto", "true"])
def test_jit_compile_true_really_compiles_with_xla(jit, tmp_path, monkeypatch):
    """Keras turns XLA off while op determinism is on; kit leaves determinism off when XLA is asked for."""
    from kit.config import load_config
    from kit.harness import trainer
    from kit.harness.run import train

    built = {}
    build_model = trainer.build_model

    def recording_build(*args, **kwargs):
        built["model"], pieces = build_model(*args, **kwargs)
        return built["model"], pieces

    monkeypatch.setattr(trainer, "build_model", recording_build)
    numbers = tmp_path / "numbers.csv"  # numbers only: a category lookup layer cannot be XLA-compiled
    numbers.write_text("x1,x2,y\n" + "".join(f"{i % 7},{i % 5},{2 * (i % 7) - i % 5}\n" for i in range(200)))
    folder = project(tmp_path / "proj", REGRESSION.format(train=numbers).replace("epochs: 8", "epochs: 1"))
    train(load_config(folder, [f"train.jit_compile={jit}"]))
    assert built["model"].jit_compile is (jit == "true")
    trainer.seed_everything(0)  # later tests in this process expect deterministic ops


# ------------------------------------------------------------ faults during `kit run` (in this process)


def interrupted_run(runner, tmp_path, extra: str = "", epochs: int = 3, plugins: str = ""):
    """A project and its run-1, stopped by a Ctrl-C at the end of epoch 1 (state saved, exit 130)."""
    data = make_tabular(tmp_path)
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / "ctrl_c.py").write_text(
        "import os, signal, keras, kit\n"
        "class CtrlC(keras.callbacks.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        if epoch == 0 and os.environ.get('KIT_TEST_CTRL_C'):\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "@kit.hookimpl\n"
        "def register_callbacks(register, run):\n"
        "    register(CtrlC())\n"
    )
    config = REGRESSION.format(train=data).replace("epochs: 8", f"epochs: {epochs}")
    folder = project(tmp_path / "p", config + extra + f"plugins: [{plugins}ctrl_c.py]\n")
    result = runner.invoke(cli, ["run", str(folder)], env={"KIT_TEST_CTRL_C": "1"})
    assert result.exit_code == 130, result.output
    assert "stopped by SIGINT at step" in result.output
    return folder, folder / "runs" / "run-1"


def test_a_changed_config_or_data_starts_a_new_run_and_says_why(runner, tmp_path):
    folder, run_dir = interrupted_run(runner, tmp_path)
    data = tmp_path / "table.csv"
    data.write_text(data.read_text() + "0.5,0.5,red,1.5\n")
    result = runner.invoke(cli, ["run", str(folder)], env={"KIT_TEST_CTRL_C": "1"})
    assert result.exit_code == 130, result.output
    assert "run-1 is unfinished but its data changed since it started (data.train); starting a new run" in result.output
    (folder / "kit.yaml").write_text((folder / "kit.yaml").read_text().replace("epochs: 3", "epochs: 2"))
    result = run_ok(runner, ["run", str(folder)])
    assert "run-2 is unfinished but was started with another config (changed: train.epochs)" in result.output
    assert f"--run-dir {folder / 'runs' / 'run-2'}" in result.output
    assert (folder / "runs" / "run-3" / "metrics.json").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # kept, never overwritten
    refused = runner.invoke(cli, ["run", str(folder), "--run-dir", str(run_dir)])
    assert refused.exit_code == 1 and "changed" in refused.output


STATEFUL = """
import json, os, keras, kit
class Counter(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path, self.seen, self.restored = path, 0, None
    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
    def on_train_end(self, logs=None):
        self.path.write_text(json.dumps({"seen": self.seen, "restored": self.restored}))
    def get_state(self):
        return {"seen": self.seen}
    def set_state(self, state):
        if os.environ.get("KIT_TEST_BROKEN"):
            raise KeyError("seen")
        self.seen = self.restored = state["seen"]
@kit.hookimpl
def register_callbacks(register, run):
    register(Counter(run.run_dir / "counter.json"))
"""


def test_callback_states_are_saved_and_given_back(runner, tmp_path):
    """A plugin callback's get_state() is saved with each training state; set_state() gets it back on resume,
    and a set_state() that fails is one line naming the plugin and the callback."""
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "stateful.py").write_text(STATEFUL)
    folder, run_dir = interrupted_run(runner, tmp_path, epochs=2, plugins="stateful.py, ")
    saved = json.loads(sorted((run_dir / "backup").glob("step-*"))[-1].joinpath("callbacks.json").read_text())
    assert {"seen": 10} in saved.values(), saved
    broken = runner.invoke(cli, ["run", str(folder)], env={"KIT_TEST_BROKEN": "1"})
    assert broken.exit_code == 1, broken.output
    assert "Plugin 'stateful.py' failed in its callback Counter.set_state: KeyError: 'seen'" in broken.output
    run_ok(runner, ["run", str(folder)])
    assert json.loads((run_dir / "counter.json").read_text()) == {"seen": 20, "restored": 10}


def test_odd_run_folders_and_paths_do_not_get_in_the_way(runner, tmp_path, monkeypatch):
    """A file named run-1, a stale lock, braces in the path, a clock set back, a cut history line."""
    import time
    import types

    data = make_tabular(tmp_path)
    folder = project(tmp_path / "my {project}", REGRESSION.format(train=data).replace("epochs: 8", "epochs: 2"))
    (folder / "runs").mkdir()
    (folder / "runs" / "run-1").write_text("not a run")
    now = [2_000_000_000.0]
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.time = lambda: now.__setitem__(0, now[0] - 3600) or now[0]  # set back an hour at every look
    monkeypatch.setattr("kit.harness.run.time", clock)
    run_ok(runner, ["run", str(folder)])
    record = json.loads((folder / "runs" / "run-2" / "run.json").read_text())
    assert record["status"] == "complete" and record["wall_seconds"] >= 0
    assert (folder / "runs" / "run-2" / "checkpoints" / "best.weights.h5").is_file()
    stale = tmp_path / "elsewhere"
    stale.mkdir()
    (stale / ".lock").write_text("12345 a-host-long-gone\n")  # left by a run killed as it started
    run_ok(runner, ["run", str(folder), "--run-dir", str(stale)])
    assert json.loads((stale / "run.json").read_text())["status"] == "complete"


def test_a_cut_history_line_does_not_stop_a_resume(runner, tmp_path):
    """Killed while appending to history.jsonl: the half line is dropped and the epoch trained again."""
    folder, run_dir = interrupted_run(runner, tmp_path)
    with open(run_dir / "history.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "loss": 0.3')
    run_ok(runner, ["run", str(folder)])
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_plugin_callbacks_that_stop_training_or_save_nothing_are_fine(runner, tmp_path):
    """A callback setting model.stop_training mid-epoch ends the run early and cleanly; keep_checkpoints 1
    with early stopping keeps one epoch file and the best weights in the model; a step interval longer than
    the run saves at epoch ends only."""
    data = make_tabular(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "stop.py").write_text(
        "import keras, kit\n"
        "class Enough(keras.callbacks.Callback):\n"
        "    def on_train_batch_end(self, batch, logs=None):\n"
        "        if self.model.optimizer.iterations.numpy() == 25:\n"
        "            self.model.stop_training = True\n"
        "@kit.hookimpl\n"
        "def register_callbacks(register, run):\n"
        "    register(Enough())\n"
    )
    extra = "  keep_checkpoints: 1\n  early_stopping_patience: 3\n  checkpoint_every_steps: 100000\n"
    config = REGRESSION.format(train=data).replace("  verbose: 0\n", "  verbose: 0\n" + extra)
    folder = project(tmp_path / "p", config + "plugins: [stop.py]\n")
    run_ok(runner, ["run", str(folder)])
    run_dir = folder / "runs" / "run-1"
    assert [json.loads(line)["epoch"] for line in (run_dir / "history.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert [p.name for p in (run_dir / "checkpoints").glob("epoch-*")] == ["epoch-003.weights.h5"]


def test_a_plugin_cannot_end_kit_at_import(tmp_path, monkeypatch):
    """An installed plugin calling sys.exit(0) or raising KeyboardInterrupt when imported is recorded as failed."""
    from kit.plugins import Plugins

    class Entry:
        def __init__(self, name, error):
            self.name, self.package, self.version, self.error = name, name, "1.0", error

        def load(self):
            raise self.error

    entries = [Entry("quits", SystemExit(0)), Entry("ctrl", KeyboardInterrupt()), Entry("halts", GeneratorExit())]
    monkeypatch.setattr("kit.plugins.entry_points", lambda group: entries)
    monkeypatch.delenv("KIT_LOAD_PLUGINS")
    plugins = Plugins()
    plugins.load_entry_points()
    errors = {info.name: info.error for info in plugins.errors()}
    assert "called sys.exit(0)" in errors["quits"]
    assert errors["ctrl"].startswith("import failed: KeyboardInterrupt")
    assert errors["halts"].startswith("import failed: GeneratorExit")


def test_something_in_the_way_in_the_run_folder_is_named(runner, tmp_path):
    """A file where the run keeps a folder (checkpoints/, backup/): one line naming it; moved away, it resumes."""
    import shutil

    folder, run_dir = interrupted_run(runner, tmp_path)
    shutil.move(run_dir / "checkpoints", tmp_path / "moved")
    (run_dir / "checkpoints").write_text("oops")
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"kit cannot write {run_dir / 'checkpoints'} (File exists): something else is in its place" in result.output
    (run_dir / "checkpoints").unlink()
    run_ok(runner, ["run", str(folder)])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
