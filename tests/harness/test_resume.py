"""Exact resume: `kit run` killed with SIGKILL mid-epoch, run again, ends bit-identical to an uninterrupted run.

Each built-in task runs three times in real subprocesses: once straight
through, once killed by a real SIGKILL at a random step (a project-local
plugin sends it to its own process, so the step is known), and once more to
finish the killed run. Final weights and metrics must match exactly.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import make_tabular, project, review, write_csv

pytestmark = pytest.mark.slow

KILLER = """
import os, signal, keras, kit

class KillAtStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == int(os.environ.get("KIT_TEST_KILL_AT_STEP", -1)):
            os.kill(os.getpid(), signal.SIGKILL)

@kit.hookimpl
def register_callbacks(register, run):
    register(KillAtStep())
"""


def text_data(folder):
    rng = random.Random(0)
    rows = [
        [review(rng, positive), "pos" if positive else "neg"] for positive in [rng.random() < 0.5 for _ in range(160)]
    ]
    return write_csv(folder / "reviews.csv", ["text", "label"], rows)


def corpus(folder):
    from tests.harness.test_generation import python_docs

    path = folder / "corpus.txt"
    path.write_text(python_docs(12_000), encoding="utf-8")
    return path


# task -> (data maker, config); every config has dropout, a warm-up + decay schedule and 3 epochs.
TASKS = {
    "classification": (
        text_data,
        "task: classification\ndata:\n  train: {data}\n  batch_size: 8\nmodel:\n  sequence_length: 16\n"
        "  vocabulary_size: 200\n",
    ),
    "regression": (
        make_tabular,
        "task: regression\ndata:\n  train: {data}\n  target: y\n  batch_size: 16\n",
    ),
    "generation": (
        corpus,
        "task: generation\ndata:\n  train: {data}\n  batch_size: 8\nmodel:\n  sequence_length: 32\n"
        "  vocabulary_size: 300\n",
    ),
}
TRAIN = "train:\n  epochs: 3\n  warmup_fraction: 0.1\n  checkpoint_every_steps: 4\n  verbose: 0\nplugins: [killer.py]\n"


def kit_run(folder, kill_at=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KIT_LOAD_PLUGINS": ""}
    if kill_at is not None:
        env["KIT_TEST_KILL_AT_STEP"] = str(kill_at)
    return subprocess.run(
        [sys.executable, "-m", "kit", "run", str(folder)], env=env, capture_output=True, text=True, timeout=600
    )


def weights(path):
    """Every array in a Keras .weights.h5 file, by its path in the file."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None
        )
    return arrays


def final_state(run_dir):
    checkpoint = sorted((run_dir / "checkpoints").glob("epoch-*.weights.h5"))[-1]
    return weights(checkpoint), json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("task", sorted(TASKS))
def test_killed_run_resumes_bit_identical(tmp_path, task):
    make_data, config = TASKS[task]
    data = make_data(tmp_path)
    folders = {}
    for name in ("straight", "killed"):
        folders[name] = project(tmp_path / name, config.format(data=data) + TRAIN)
        (folders[name] / "killer.py").write_text(KILLER)

    straight = kit_run(folders["straight"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    record = json.loads((folders["straight"] / "runs" / "run-1" / "run.json").read_text())
    history = (folders["straight"] / "runs" / "run-1" / "history.jsonl").read_text().splitlines()
    assert len(history) == 3 and record["status"] == "complete"

    # A random step that is not an epoch's last and not a multiple of the save interval:
    # the resumed run must replay steps since the last saved state, mid-epoch.
    per_epoch = steps_per_epoch(straight.stderr)
    candidates = [s for s in range(per_epoch + 1, 3 * per_epoch) if s % per_epoch and s % 4]
    kill_at = random.Random().choice(candidates)
    killed = kit_run(folders["killed"], kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, f"not killed at step {kill_at}: {killed.stderr[-2000:]}"
    run_dir = folders["killed"] / "runs" / "run-1"
    assert not (run_dir / "metrics.json").exists()
    assert list((run_dir / "backup").glob("step-*")), "no saved state before the kill"

    resumed = kit_run(folders["killed"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last_saved = max(kill_at // 4 * 4, kill_at // per_epoch * per_epoch)  # every 4 steps and at epoch ends
    assert f"resuming from step {last_saved}" in resumed.stderr
    assert not (folders["killed"] / "runs" / "run-2").exists()
    assert not (run_dir / "backup").exists()  # removed once the run is complete

    expected_weights, expected_metrics = final_state(folders["straight"] / "runs" / "run-1")
    got_weights, got_metrics = final_state(run_dir)
    assert sorted(got_weights) == sorted(expected_weights)
    for name, array in expected_weights.items():
        assert np.array_equal(got_weights[name], array), f"{task}: {name} differs after resuming at step {kill_at}"
    assert got_metrics == expected_metrics


def steps_per_epoch(stderr):
    """From kit's "training N parameters for E epochs of S steps" line."""
    return int(re.search(r"epochs of (\d+) steps", stderr).group(1))


def test_sigterm_saves_the_state_mid_epoch_and_exits_130(tmp_path):
    """SIGTERM (what schedulers send) saves the training state at the next step and exits 130."""
    data = make_tabular(tmp_path, rows=2000)
    config = TASKS["regression"][1].format(data=data).replace("batch_size: 16", "batch_size: 8")
    folder = project(tmp_path / "p", config + "train:\n  epochs: 40\n  verbose: 0\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KIT_LOAD_PLUGINS": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "kit", "run", str(folder)], env=env, stderr=subprocess.PIPE, text=True
    )
    history = folder / "runs" / "run-1" / "history.jsonl"
    deadline = time.time() + 300
    while not (history.exists() and history.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "SIGTERM received" in stderr and "Run the same command again" in stderr
    assert "Traceback" not in stderr
    states = sorted((folder / "runs" / "run-1" / "backup").glob("step-*"))
    assert states, "no state saved on SIGTERM"
    step = int(states[-1].name.split("-")[1])
    assert step % steps_per_epoch(stderr), "the state was saved mid-epoch, at the step the signal arrived"
    assert f"stopped by SIGTERM at step {step}" in stderr


def small_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dropout(0.3)(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer="adam", loss="mse")
    return model


def train_steps(model, steps):
    x = np.ones((4, 3), "float32")
    for _ in range(steps):
        model.train_on_batch(x, np.zeros((4, 1), "float32"))


def test_a_damaged_newest_state_falls_back_to_the_previous_one(tmp_path, capsys):
    from kit.harness.resume import WEIGHTS, restore_state, save_state, saved_states

    model = small_model()
    train_steps(model, 2)
    save_state(model, tmp_path, epoch=0, keep=3)
    expected = [w.numpy().copy() for w in model.weights]
    train_steps(model, 3)
    newest = save_state(model, tmp_path, epoch=0, keep=3)
    data = (newest / WEIGHTS).read_bytes()
    (newest / WEIGHTS).write_bytes(data[: len(data) // 2])  # a write cut short by a crash or a full disk
    (tmp_path / ".writing-abc").mkdir()  # an interrupted write: never a candidate
    assert [p.name for p in saved_states(tmp_path)] == ["step-000000005", "step-000000002"]

    fresh = small_model()
    assert restore_state(fresh, tmp_path) == 2
    assert "step-000000005 is damaged" in capsys.readouterr().err
    for restored, saved in zip(fresh.weights, expected):
        assert np.array_equal(restored.numpy(), saved)


def test_states_restore_dropout_randomness_and_prune_old_ones(tmp_path):
    from kit.harness.resume import restore_state, save_state, saved_states

    model = small_model()
    train_steps(model, 1)
    for _ in range(3):
        train_steps(model, 1)
        save_state(model, tmp_path, epoch=0, keep=2)
    assert [p.name for p in saved_states(tmp_path)] == ["step-000000004", "step-000000003"]
    train_steps(model, 2)
    expected = [w.numpy().copy() for w in model.weights]

    again = small_model()
    assert restore_state(again, tmp_path) == 4
    train_steps(again, 2)  # the same dropout masks as the uninterrupted model drew
    for got, want in zip(again.weights, expected):
        assert np.array_equal(got.numpy(), want)


def test_training_phases_finish_a_partial_epoch_first():
    from kit.harness.trainer import training_phases

    assert training_phases(0, 10, 3) == [(0, 3, 10, 0)]
    assert training_phases(20, 10, 3) == [(2, 3, 10, 20)]
    assert training_phases(23, 10, 3) == [(2, 3, 7, 23)]
    assert training_phases(13, 10, 3) == [(1, 2, 7, 13), (2, 3, 10, 20)]
    assert training_phases(30, 10, 3) == []  # trained to the end; only saving was left
