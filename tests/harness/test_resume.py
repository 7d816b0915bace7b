"""Exact resume and faults during `kit run`, with real processes and real signals.

A fault-injection harness: `faulty_project` adds a project-local plugin
(`FAULTS` below) to a project; `kit_run(folder, "WHEN=WHAT")` runs `kit run`
in a subprocess whose plugin strikes WHAT (SIGKILL, SIGTERM, SIGINT, two
SIGINTs, SIGHUP) WHEN: after a given training step, or on entering (or
leaving) a named function of kit's run (saving the model, the final
evaluation, writing a training state...). `killed_when_file_appears` kills
from outside when a file shows up. Each killed or stopped run is run again
and must end byte for byte as an uninterrupted one.
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
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import make_tabular, project, review, write_csv

pytestmark = pytest.mark.slow

FAULTS = '''
"""Fault injection for kit's tests: KIT_TEST_FAULT="WHEN=WHAT[,WHEN=WHAT]".

WHEN: `step:N` (after training step N), `NAME` (on entering a function of kit.harness.run, trainer, callbacks
or resume) or `after:NAME` (on leaving it). WHAT: KILL, TERM, INT, HUP, INT2 (two SIGINTs, as a double Ctrl-C)
SLEEP (a minute, holding the run) or WAIT (holding the run until the file $KIT_TEST_RELEASE exists, after
creating $KIT_TEST_RELEASE.held-PID to say it is held).
"""
import os
import signal
import time

import keras

import kit
from kit import plots
from kit.harness import artifacts, callbacks, resume, run, trainer

FAULTS = dict(item.split("=") for item in os.environ.get("KIT_TEST_FAULT", "").split(",") if item)
SIGNALS = {"KILL": ["SIGKILL"], "TERM": ["SIGTERM"], "INT": ["SIGINT"], "HUP": ["SIGHUP"], "INT2": ["SIGINT"] * 2}


def strike(what):
    if what == "SLEEP":
        time.sleep(60)
    if what == "WAIT":
        release = os.environ["KIT_TEST_RELEASE"]
        open(f"{release}.held-{os.getpid()}", "w").close()
        deadline = time.time() + 300
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.05)
    for name in SIGNALS.get(what, []):
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(0.01)  # let Python run its handler before the next one


def patched(original, what, after):
    def wrapper(*args, **kwargs):
        if not after:
            strike(what)
        result = original(*args, **kwargs)
        if after:
            strike(what)
        return result

    return wrapper


for when, what in FAULTS.items():
    after, _, name = when.rpartition(":")
    if after == "step":
        continue
    module = next(m for m in (run, trainer, artifacts, callbacks, resume, plots) if hasattr(m, name))
    setattr(module, name, patched(getattr(module, name), what, after == "after"))


class StepFaults(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        what = FAULTS.get(f"step:{int(self.model.optimizer.iterations.numpy())}")
        if what:
            strike(what)


@kit.hookimpl
def register_callbacks(register, run):
    register(StepFaults())
'''


def text_data(folder):
    rng = random.Random(0)
    rows = [
        [review(rng, positive), "pos" if positive else "neg"] for positive in [rng.random() < 0.5 for _ in range(160)]
    ]
    return write_csv(folder / "reviews.csv", ["text", "label"], rows)


def corpus(folder):
    """40 documents of about 300 characters, one per row (a corpus file would be 3 passages: no validation)."""
    from tests.harness.test_generation import python_docs

    text = python_docs(12_000)
    return write_csv(folder / "corpus.csv", ["text"], [[text[i : i + 300]] for i in range(0, 12_000, 300)])


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
TRAIN = "train:\n  epochs: 3\n  warmup_fraction: 0.1\n  checkpoint_every_steps: 4\n  verbose: 0\n"
# Stops early: with this learning rate validation loss is best at epoch 2, and training stops after epoch 5.
EARLY_STOPPING = (
    "task: regression\ndata:\n  train: {data}\n  target: y\n  batch_size: 16\nmodel:\n  dropout: 0.3\n"
    "train:\n  epochs: 12\n  learning_rate: 0.1\n  early_stopping_patience: 3\n  checkpoint_every_steps: 5\n"
    "  verbose: 0\n"
)


# ------------------------------------------------------------------ harness


def faulty_project(folder: Path, config: str, plugins: tuple[str, ...] = ()) -> Path:
    """A project whose `kit run` can be made to fail on demand (see `kit_run`)."""
    folder = project(folder, config + f"plugins: [{', '.join(['faults.py', *plugins])}]\n")
    (folder / "faults.py").write_text(FAULTS)
    return folder


def _env(fault: str | None, release: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KIT_LOAD_PLUGINS": ""}
    env.pop("KIT_TEST_FAULT", None)
    if fault:
        env["KIT_TEST_FAULT"] = fault
    if release is not None:
        env["KIT_TEST_RELEASE"] = str(release)
    return env


def kit_run(folder: Path, fault: str | None = None, *args: str) -> subprocess.CompletedProcess:
    """`kit run FOLDER` in a fresh process, striking `fault` ("WHEN=WHAT", see FAULTS)."""
    return subprocess.run(
        [sys.executable, "-m", "kit", "run", str(folder), *args],
        env=_env(fault),
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_run(folder: Path, fault: str | None = None, *args: str, release: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kit", "run", str(folder), *args],
        env=_env(fault, release),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def killed_when_file_appears(folder: Path, pattern: str, number: int = signal.SIGKILL) -> subprocess.Popen:
    """Run `kit run FOLDER` and send it `number` from outside as soon as a file matching `pattern` exists."""
    process = start_run(folder)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        if list(folder.glob(pattern)):
            process.send_signal(number)
            break
        time.sleep(0.005)
    process.communicate(timeout=300)
    return process


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
    return weights(checkpoint), (run_dir / "metrics.json").read_bytes()


def assert_same_run(got: Path, expected: Path, label: str) -> None:
    """Same final checkpoint, byte-identical metrics.json, the same history (but for the times)."""
    expected_weights, expected_metrics = final_state(expected)
    got_weights, got_metrics = final_state(got)
    assert sorted(got_weights) == sorted(expected_weights)
    for name, array in expected_weights.items():
        assert np.array_equal(got_weights[name], array), f"{label}: {name} differs"
    assert got_metrics == expected_metrics, f"{label}: metrics.json differs"
    # The same epochs with the same metrics, those of an epoch cut short by the kill included (only times differ).
    history = [[_timeless(line) for line in (d / "history.jsonl").read_text().splitlines()] for d in (got, expected)]
    assert history[0] == history[1], f"{label}: history {history[0]}\nuninterrupted {history[1]}"
    assert not (got / "backup").exists()  # removed once the run is complete


def _timeless(line: str) -> dict:
    record = json.loads(line)
    record.pop("seconds")
    return record


def steps_per_epoch(stderr):
    """From kit's "training N parameters for E epochs of S steps" line."""
    return int(re.search(r"epochs of (\d+) steps", stderr).group(1))


def saved_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run_dir / "backup").glob("step-*"))


def straight_run(tmp_path: Path, config: str, plugins: tuple[str, ...] = ()) -> tuple[Path, str]:
    folder = faulty_project(tmp_path / "straight", config, plugins)
    done = kit_run(folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((folder / "runs" / "run-1" / "run.json").read_text())["status"] == "complete"
    return folder / "runs" / "run-1", done.stderr


# ---------------------------------------------------------------- kill -9


@pytest.mark.parametrize("task", sorted(TASKS))
def test_killed_run_resumes_bit_identical(tmp_path, task):
    make_data, config = TASKS[task]
    config = config.format(data=make_data(tmp_path)) + TRAIN
    expected, stderr = straight_run(tmp_path, config)
    # A random step that is not an epoch's last and not a multiple of the save interval:
    # the resumed run must replay steps since the last saved state, mid-epoch.
    per_epoch = steps_per_epoch(stderr)
    candidates = [s for s in range(per_epoch + 1, 3 * per_epoch) if s % per_epoch and s % 4]
    kill_at = random.Random().choice(candidates)
    folder = faulty_project(tmp_path / "killed", config)
    killed = kit_run(folder, f"step:{kill_at}=KILL")
    assert killed.returncode == -signal.SIGKILL, f"not killed at step {kill_at}: {killed.stderr[-2000:]}"
    run_dir = folder / "runs" / "run-1"
    assert not (run_dir / "metrics.json").exists()
    assert saved_steps(run_dir), "no saved state before the kill"

    resumed = kit_run(folder)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last_saved = max(kill_at // 4 * 4, kill_at // per_epoch * per_epoch)  # every 4 steps and at epoch ends
    assert f"resuming from step {last_saved}" in resumed.stderr
    assert not (folder / "runs" / "run-2").exists()
    assert_same_run(run_dir, expected, f"{task} killed at step {kill_at}")


def test_early_stopped_run_resumes_bit_identical(tmp_path):
    """Early stopping's best value, wait count and best weights are part of the state (issue 13, item 5)."""
    config = EARLY_STOPPING.format(data=make_tabular(tmp_path))
    expected, stderr = straight_run(tmp_path, config)
    trained = len((expected / "history.jsonl").read_text().splitlines())
    assert 3 <= trained < 12, f"the test config must stop early, trained {trained} epochs"
    per_epoch = steps_per_epoch(stderr)
    # Killed from outside the moment epoch 2's checkpoint appears, as the issue did it...
    folder = faulty_project(tmp_path / "outside", config)
    assert killed_when_file_appears(folder, "runs/run-1/checkpoints/epoch-002.weights.h5").returncode == -9
    assert kit_run(folder).returncode == 0
    assert_same_run(folder / "runs" / "run-1", expected, "killed after epoch 2's checkpoint")
    # ...and at a random step, mid-epoch, before the stop.
    kill_at = random.Random().choice([s for s in range(per_epoch + 1, (trained - 1) * per_epoch) if s % 5])
    folder = faulty_project(tmp_path / "inside", config)
    assert kit_run(folder, f"step:{kill_at}=KILL").returncode == -9
    resumed = kit_run(folder)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(folder / "runs" / "run-1", expected, f"early stopping, killed at step {kill_at}")


DOCS = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


def documented_stateful_callback() -> str:
    """The `get_state`/`set_state` example of docs/hooks.md, as a plugin file."""
    section = DOCS.read_text(encoding="utf-8").split("## register_callbacks(")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[1]


def test_documented_callback_state_survives_a_kill(tmp_path):
    """A plugin callback's get_state()/set_state() carry it through kill -9 exactly (the docs example)."""
    config = TASKS["regression"][1].format(data=make_tabular(tmp_path)) + TRAIN
    for side in ("straight", "killed"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "smoothed.py").write_text(documented_stateful_callback())
    expected, stderr = straight_run(tmp_path, config, ("smoothed.py",))
    folder = faulty_project(tmp_path / "killed", config, ("smoothed.py",))
    kill_at = random.Random().choice([s for s in range(5, 3 * steps_per_epoch(stderr)) if s % 4])
    assert kit_run(folder, f"step:{kill_at}=KILL").returncode == -9
    assert kit_run(folder).returncode == 0
    smoothed = [json.loads((d / "smoothed_loss.json").read_text()) for d in (folder / "runs" / "run-1", expected)]
    assert smoothed[0] == smoothed[1] and smoothed[0]["steps"] > 0
    assert_same_run(folder / "runs" / "run-1", expected, f"documented callback, killed at step {kill_at}")


# ------------------------------------------------------ faults after training


@pytest.fixture(scope="module")
def regression_straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    config = TASKS["regression"][1].format(data=make_tabular(root)) + TRAIN
    run_dir, stderr = straight_run(root, config)
    return root, config, run_dir, steps_per_epoch(stderr)


@pytest.mark.parametrize(
    "fault, status",
    [
        ("save_model=KILL", -9),  # killed while saving the model
        ("final_metrics=TERM", 130),  # SIGTERM during the final evaluation (issue 13: it exited 143)
        ("write_outputs=KILL", -9),  # killed while writing metrics.json
        ("plot_curves=KILL", -9),  # killed while drawing curves.png
        ("final_metrics=INT", 130),  # Ctrl-C during the final evaluation
    ],
)
def test_stopped_after_training_finishes_without_training_again(regression_straight, tmp_path, fault, status):
    root, config, expected, per_epoch = regression_straight
    folder = faulty_project(tmp_path / "p", config)
    stopped = kit_run(folder, fault)
    assert stopped.returncode == status, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    run_dir = folder / "runs" / "run-1"
    history = (run_dir / "history.jsonl").read_bytes()
    # The state saved when training ended holds no optimizer slots.
    state = max((run_dir / "backup").glob("step-*"))
    assert json.loads((state / "state.json").read_text())["final"] is True
    with h5py.File(state / "state.weights.h5", "r") as saved:
        assert "optimizer" not in saved and "layers" in saved
    finished = kit_run(folder)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resuming from step {3 * per_epoch}" in finished.stderr  # the trained state: nothing to train
    assert (run_dir / "history.jsonl").read_bytes() == history
    assert_same_run(run_dir, expected, fault)


@pytest.mark.parametrize(
    "fault",
    [
        "after:_write_state=KILL",  # every file of a state written, not yet renamed into place
        "save_weights_file=KILL",  # while writing an epoch checkpoint
        "step:7=INT",  # Ctrl-C mid-epoch: saved at that step
        "step:7=HUP",  # the terminal closed mid-epoch: saved at that step
    ],
)
def test_faults_during_training_resume_exactly(regression_straight, tmp_path, fault):
    root, config, expected, per_epoch = regression_straight
    folder = faulty_project(tmp_path / "p", config)
    stopped = kit_run(folder, fault)
    assert stopped.returncode in (-9, 130), stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    run_dir = folder / "runs" / "run-1"
    if fault.startswith("step:"):
        assert saved_steps(run_dir)[-1] == 7 and "stopped by SIG" in stopped.stderr
    assert not list((run_dir / "backup").glob(".writing-*")) or fault.startswith("after:")
    finished = kit_run(folder)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_same_run(run_dir, expected, fault)


def test_second_ctrl_c_quits_at_once(regression_straight, tmp_path):
    """Two Ctrl-C: no state for that step, exit 130 at once; the run resumes from the state before."""
    root, config, expected, per_epoch = regression_straight
    folder = faulty_project(tmp_path / "p", config)
    stopped = kit_run(folder, "step:7=INT2")
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    assert saved_steps(folder / "runs" / "run-1")[-1] == 4  # checkpoint_every_steps: 4
    assert kit_run(folder).returncode == 0
    assert_same_run(folder / "runs" / "run-1", expected, "two Ctrl-C")


def test_sigterm_before_training_creates_nothing(tmp_path):
    """SIGTERM while the data is being checked: exit 130 (not 143), and no run folder."""
    folder = faulty_project(tmp_path / "p", TASKS["regression"][1].format(data=make_tabular(tmp_path)) + TRAIN)
    stopped = kit_run(folder, "scan=TERM")
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "SIGTERM received" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not (folder / "runs").exists()


def test_sigterm_saves_the_state_mid_epoch_and_exits_130(tmp_path):
    """SIGTERM (what schedulers send) from outside saves the training state at the next step and exits 130."""
    data = make_tabular(tmp_path, rows=2000)
    config = TASKS["regression"][1].format(data=data).replace("batch_size: 16", "batch_size: 8")
    folder = project(tmp_path / "p", config + "train:\n  epochs: 40\n  verbose: 0\n")
    process = start_run(folder)
    run_dir = folder / "runs" / "run-1"
    deadline = time.time() + 300
    # The first epoch's state saved (the saver is the last epoch-end callback): the run is in epoch 2's
    # steps, so the signal lands mid-epoch however slow the machine is.
    while not ((run_dir / "backup").is_dir() and saved_steps(run_dir)):
        assert time.time() < deadline and process.poll() is None, "no epoch state was saved"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "SIGTERM received" in stderr and "Run the same command again" in stderr
    assert "Traceback" not in stderr
    step = saved_steps(run_dir)[-1]
    assert step % steps_per_epoch(stderr), "the state was saved mid-epoch, at the step the signal arrived"
    assert f"stopped by SIGTERM at step {step}" in stderr


# ---------------------------------------------------------- concurrent runs


def test_two_runs_at_once_train_into_their_own_folders(regression_straight, tmp_path):
    """Started at the same instant, then a third while they train: run-1, run-2, run-3, each complete."""
    root, config, expected, per_epoch = regression_straight
    folder = faulty_project(tmp_path / "p", config)
    release = tmp_path / "release"  # the first two hold after their first step until it exists
    first, second = (start_run(folder, "step:1=WAIT", release=release) for _ in range(2))
    deadline = time.time() + 300
    while len(list(tmp_path.glob("release.held-*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    third = start_run(folder)
    third_output = third.communicate(timeout=600)  # it trains while the other two hold their folders
    release.touch()
    outputs = [process.communicate(timeout=600) for process in (first, second)] + [third_output]
    for process, (_, stderr) in zip((first, second, third), outputs):
        assert process.returncode == 0, stderr[-3000:]
    runs = sorted(p.name for p in (folder / "runs").iterdir())
    assert runs == ["run-1", "run-2", "run-3"]
    for name in runs:
        assert_same_run(folder / "runs" / name, expected, name)
    assert any("being trained by another kit run (pid" in stderr for _, stderr in outputs), outputs[2][1]


def test_run_dir_held_by_a_running_kit_run_is_refused(regression_straight, tmp_path):
    """`--run-dir` at a run another process is training: refused with that process's pid."""
    root, config, expected, per_epoch = regression_straight
    folder = faulty_project(tmp_path / "p", config)
    run_dir = folder / "runs" / "run-1"
    holder = start_run(folder, "step:2=SLEEP")
    deadline = time.time() + 300
    while not (run_dir / "run.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    refused = kit_run(folder, None, "--run-dir", str(run_dir))
    holder.kill()
    holder.communicate(timeout=60)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert f"is being written by another kit run (pid {holder.pid})" in refused.stderr


# ---------------------------------------------------------------- disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_disk_full_is_one_line_and_keeps_the_saved_states(tmp_path, small_disk):
    """A full disk while training: one "disk is full" line, exit 1, no h5py tracebacks, saved states intact."""
    config = TASKS["regression"][1].format(data=make_tabular(tmp_path))
    config += "model:\n  hidden_units: [256, 256]\ntrain:\n  epochs: 20\n  checkpoint_every_steps: 3\n  verbose: 0\n"
    folder = project(tmp_path / "p", config + f"runs_dir: {small_disk / 'runs'}\n")
    full = kit_run(folder)
    assert full.returncode == 1, full.stderr[-3000:]
    problems = [line for line in full.stderr.splitlines() if re.search(r"Error|Traceback|h5py|Exception", line)]
    assert len(problems) == 1 and problems[0].startswith("Error: The disk is full"), full.stderr[-3000:]
    run_dir = small_disk / "runs" / "run-1"
    assert not list((run_dir / "backup").glob(".writing-*"))
    assert saved_steps(run_dir), "the disk filled before any state was saved: make the tmpfs larger"


# ---------------------------------------------------------------- unit level


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


def _truncate(state, name):
    data = (state / name).read_bytes()
    (state / name).write_bytes(data[: len(data) // 2])


DAMAGES = {
    "a truncated weights file": lambda state: _truncate(state, "state.weights.h5"),
    "no random.npz": lambda state: (state / "random.npz").unlink(),
    "no metrics.npz": lambda state: (state / "metrics.npz").unlink(),
    "no callbacks.json": lambda state: (state / "callbacks.json").unlink(),
    "a garbled state.json": lambda state: (state / "state.json").write_text("{not json"),
    "a state.json that is a list": lambda state: (state / "state.json").write_text("[1, 2]"),
    "callbacks.json not an object": lambda state: (state / "callbacks.json").write_text('"x"'),
    "a missing callback array": lambda state: (state / "callbacks.json").write_text('{"a": {"__array__": "7"}}'),
    "one random state too many": lambda state: np.savez(state / "random.npz", np.zeros(2), np.zeros(2), np.zeros(2)),
    "another model's weights": lambda state: (state / "state.json").write_text(
        json.dumps({**json.loads((state / "state.json").read_text()), "model": "0123456789abcdef"})
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_state_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    from kit.harness.resume import restore_state, save_state, saved_states

    model = small_model()
    train_steps(model, 2)
    save_state(model, tmp_path, epoch=0, keep=3)
    expected = [w.numpy().copy() for w in model.weights]
    train_steps(model, 3)
    newest = save_state(model, tmp_path, epoch=0, keep=3)
    DAMAGES[damage](newest)
    (tmp_path / ".writing-abc").mkdir()  # an interrupted write: never a candidate
    assert [p.name for p in saved_states(tmp_path)] == ["step-000000005", "step-000000002"]

    fresh = small_model()
    assert restore_state(fresh, tmp_path).step == 2
    assert "step-000000005 is damaged" in capsys.readouterr().err
    for restored, saved in zip(fresh.weights, expected):
        assert np.array_equal(restored.numpy(), saved)
    # Set aside, kept: the states saved from here on are the newest, never pruned in its favour.
    assert [p.name for p in saved_states(tmp_path)] == ["step-000000002"]
    assert (tmp_path / "damaged-step-000000005").is_dir()


def test_when_every_state_is_damaged_training_starts_afresh(tmp_path, capsys):
    from kit.harness.resume import restore_state, save_state, saved_states

    model = small_model()
    train_steps(model, 3)
    state = save_state(model, tmp_path, epoch=0)
    (state / "state.weights.h5").write_bytes(b"")
    (tmp_path / "step-000000009").write_text("a file, not a state")
    fresh = small_model()
    untouched = [v.numpy().copy() for v in fresh.weights]
    assert restore_state(fresh, tmp_path).step == 0
    assert int(fresh.optimizer.iterations.numpy()) == 0
    for got, want in zip(fresh.weights, untouched):
        assert np.array_equal(got.numpy(), want)
    assert saved_states(tmp_path) == []


def lora_model():
    """`small_model` with LoRA adapters on its first Dense layer, as `model.lora_rank` fine-tunes."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    adapted = keras.layers.Dense(4)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dropout(0.3)(adapted(inputs))))
    adapted.enable_lora(2)
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.parametrize("final", [False, True])
def test_states_of_a_lora_model_resume_its_adapters(tmp_path, final):
    """Keras writes a LoRA layer's kernel with its adapters merged in and zeroes the adapters when it loads one:
    a state keeps the base kernel and both adapters as they are, so training goes on exactly (and the adapters
    a finished run saves are the trained ones, not zeros)."""
    from kit.harness.resume import restore_state, save_state

    model = lora_model()
    train_steps(model, 3)
    save_state(model, tmp_path, epoch=0, final=final)
    if not final:
        train_steps(model, 2)
    expected = [w.numpy().copy() for w in model.weights]

    again = lora_model()
    restored = restore_state(again, tmp_path)
    assert restored.step == 3 and restored.final is final  # a final state ends training, whatever its step
    if not final:
        train_steps(again, 2)
    assert any(np.any(w.numpy()) for w in again.weights if "lora_kernel_b" in w.path)  # the adapters trained
    for got, want in zip(again.weights, expected):
        assert np.array_equal(got.numpy(), want), got.path


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
    assert restore_state(again, tmp_path).step == 4
    train_steps(again, 2)  # the same dropout masks as the uninterrupted model drew
    for got, want in zip(again.weights, expected):
        assert np.array_equal(got.numpy(), want)


def test_callback_states_round_trip_with_weights_stored_once(tmp_path):
    """Early stopping's best weights: a marker when they are the model's own, an array file otherwise."""
    import keras

    from kit.harness.callbacks import TrainingCallbacks
    from kit.harness.resume import CALLBACK_ARRAYS, restore_state, save_state

    model = small_model()
    train_steps(model, 2)
    stopping = keras.callbacks.EarlyStopping(restore_best_weights=True)
    stopping.set_model(model)
    stopping.wait, stopping.best, stopping.best_epoch = 2, 0.25, 4
    stopping.best_weights = model.get_weights()
    callbacks = TrainingCallbacks([stopping], {}, model)
    same = save_state(model, tmp_path / "a", epoch=5, callbacks=callbacks.states())
    assert not (same / CALLBACK_ARRAYS).exists()  # the model's own weights: not written twice
    best = model.get_weights()
    train_steps(model, 1)
    other = save_state(model, tmp_path / "b", epoch=5, callbacks=callbacks.states())
    assert (other / CALLBACK_ARRAYS).exists()

    for folder, expected in ((tmp_path / "a", best), (tmp_path / "b", best)):
        fresh = keras.callbacks.EarlyStopping(restore_best_weights=True)
        restored = restore_state(small_model(), folder)
        TrainingCallbacks([fresh], {}, model).restore(restored.callbacks)
        assert (fresh.wait, fresh.best, fresh.best_epoch) == (2, 0.25, 4)
        assert all(np.array_equal(a, b) for a, b in zip(fresh.best_weights, expected))


def test_a_state_that_is_not_json_is_refused_naming_the_plugin():
    import keras

    from kit.errors import PluginError
    from kit.harness.callbacks import TrainingCallbacks

    class Odd(keras.callbacks.Callback):
        def get_state(self):
            return {"seen": {1, 2}}

    odd = Odd()
    with pytest.raises(PluginError, match=r"Plugin 'odd.py' failed in its callback Odd.get_state: TypeError"):
        TrainingCallbacks([odd], {id(odd): "odd.py"}, small_model()).states()


def test_one_training_across_fits_with_true_epoch_and_batch_numbers(capsys):
    """A resumed run's two fits: one on_train_begin, batch numbers of the epoch, "Epoch 2/3" on the progress bar."""
    import keras

    from kit.harness.callbacks import TrainingCallbacks

    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append("begin")

        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

        def on_train_end(self, logs=None):
            seen.append("end")

    model = small_model()
    x, y = np.ones((16, 3), "float32"), np.zeros((16, 1), "float32")
    callbacks = TrainingCallbacks([Record()], {}, model, verbose=2, epochs=3, steps=4)
    callbacks.start()
    callbacks.first_batch = 2  # the epoch's first two steps were trained before the kill
    model.fit(x, y, batch_size=4, initial_epoch=1, epochs=2, steps_per_epoch=2, callbacks=callbacks, verbose=0)
    model.fit(x, y, batch_size=4, initial_epoch=2, epochs=3, steps_per_epoch=4, callbacks=callbacks, verbose=0)
    callbacks.finish()
    assert seen == ["begin", 2, 3, 0, 1, 2, 3, "end"]
    shown = capsys.readouterr().out
    assert "Epoch 2/3" in shown and "Epoch 3/3" in shown and "Epoch 2/2" not in shown


def test_a_full_disk_is_an_ordinary_error_and_leaves_no_partial_file(small_disk):
    """A weights file's space is reserved first: the disk is met by Python (ENOSPC), never by HDF5 (a crash)."""
    import errno

    import keras

    from kit.harness.resume import save_weights_file

    inputs = keras.Input((512,))
    model = keras.Model(inputs, keras.layers.Dense(2048)(inputs))  # 4 MB of weights for a 3 MB disk
    with pytest.raises(OSError) as failed:
        save_weights_file(model, small_disk / "big.weights.h5")
    assert failed.value.errno == errno.ENOSPC
    assert list(small_disk.iterdir()) == []


def dense_model(units: int = 256):
    import keras

    inputs = keras.Input((128,))
    model = keras.Model(inputs, keras.layers.Dense(units)(inputs))
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_weights_are_written_into_reserved_space_without_an_image_in_memory(tmp_path, monkeypatch, with_optimizer):
    """HDF5 writes the file itself (no copy of it in memory) and it is Keras's file, cut to its size."""
    import kit.harness.resume as resume

    model = dense_model()
    expected = resume.weights_image(model, with_optimizer).getvalue()
    monkeypatch.setattr(resume, "weights_image", lambda *a, **k: pytest.fail("built the file in memory"))
    resume.write_weights(tmp_path / "w.weights.h5", model, with_optimizer)
    written = (tmp_path / "w.weights.h5").read_bytes()
    assert written == expected and len(written) < resume._size_bound(model, with_optimizer)
    copy = dense_model()
    copy.set_weights([np.zeros_like(w) for w in copy.get_weights()])
    resume.load_weights_image(copy, tmp_path / "w.weights.h5")
    for mine, theirs in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def tied_model():
    """One 2 MB embedding saved by two layers: Keras writes it twice."""
    import keras

    class Tied(keras.layers.Layer):
        def __init__(self, embedding, **kwargs):
            super().__init__(**kwargs)
            self.embedding = embedding

        def call(self, x):
            return keras.ops.matmul(x, keras.ops.transpose(self.embedding.embeddings))

    tokens = keras.Input((4,), dtype="int32")
    embedding = keras.layers.Embedding(4000, 128)
    return keras.Model(tokens, Tied(embedding)(embedding(tokens)))


def many_layers_model():
    """400 layers without variables: each still gets a group in the file."""
    import keras

    inputs = keras.Input((8,))
    x = keras.layers.Dense(8)(inputs)
    for _ in range(400):
        x = keras.layers.Activation("relu")(x)
    return keras.Model(inputs, x)


def dense_lora_model():
    """LoRA on a Dense layer: Keras writes the kernel merged with its adapters, a tensor of the kernel's size."""
    model = dense_model()
    model.layers[-1].enable_lora(4)
    return model


def test_a_tensor_is_counted_at_its_own_width():
    import tensorflow as tf

    from kit.harness.resume import _nbytes

    assert _nbytes(tf.zeros((10, 3))) == _nbytes(np.zeros((10, 3), "float32")) == 120
    assert _nbytes(tf.zeros((4,), "bfloat16")) == 8


@pytest.mark.parametrize("build", [tied_model, many_layers_model, dense_model, dense_lora_model])
def test_the_reservation_holds_the_whole_file(tmp_path, build):
    """HDF5 never writes past the reserved space, whatever the model's layout."""
    import kit.harness.resume as resume

    model = build()
    resume.write_weights(tmp_path / "w.weights.h5", model, with_optimizer=False)
    assert (tmp_path / "w.weights.h5").stat().st_size <= resume._size_bound(model, False)


def test_the_bound_is_counted_once_per_layout_of_the_variables(monkeypatch):
    """The dry run walks every object Keras saves: counted once per model and kind of file, again when the
    variables change; a new model is counted for itself."""
    import kit.harness.resume as resume

    counted = []
    keras_save = resume._keras_save
    monkeypatch.setattr(resume, "_keras_save", lambda model, store, *a: (counted.append(type(store).__name__),
                                                                         keras_save(model, store, *a)))  # fmt: skip
    model = dense_model()
    first = resume._size_bound(model, True)
    assert resume._size_bound(model, True) == first and counted == ["_SizeCount"]
    assert resume._size_bound(model, False) < first and counted == ["_SizeCount"] * 2
    model.layers[-1].enable_lora(4)  # two more variables: a layout the first count did not see
    kept = resume._size_bound(model, False)
    assert counted == ["_SizeCount"] * 3
    fresh = resume._SizeCount()
    keras_save(model, fresh, False)
    assert kept == fresh.bytes + 16384 * fresh.entries + 65536
    assert resume._size_bound(dense_model(), False) and counted == ["_SizeCount"] * 4  # another model: its own


def test_copy_on_write_file_systems_get_the_file_built_in_memory(tmp_path, monkeypatch):
    """ZFS's posix_fallocate only checks free space: no reservation is trusted there."""
    import kit.harness.resume as resume

    monkeypatch.setattr(resume, "_file_system", lambda path: "zfs")
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: pytest.fail("reserved space on ZFS"))
    model = dense_model()
    resume.write_weights(tmp_path / "w.weights.h5", model, with_optimizer=False)
    assert (tmp_path / "w.weights.h5").read_bytes() == resume.weights_image(model, False).getvalue()


def test_the_file_system_of_a_path_is_read_from_the_mount_table(tmp_path):
    from kit.harness.resume import _file_system

    assert _file_system(Path("/proc/self/status")) == "proc"
    assert _file_system(tmp_path / "w.weights.h5") not in (None, "proc")


@pytest.mark.parametrize("errno_name", ["EOPNOTSUPP", "EINVAL"])
def test_a_file_system_that_cannot_reserve_space_gets_the_file_built_in_memory(tmp_path, monkeypatch, errno_name):
    import errno

    import kit.harness.resume as resume

    def cannot(fd, offset, length):
        raise OSError(getattr(errno, errno_name), "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", cannot)
    model = dense_model()
    resume.save_weights_file(model, tmp_path / "w.weights.h5")
    assert (tmp_path / "w.weights.h5").read_bytes() == resume.weights_image(model, False).getvalue()


def test_a_weights_file_that_fits_only_just_is_written(small_disk):
    """The reservation asks little more than the file takes: 2.6 MB of weights fit a 3 MB disk."""
    from kit.harness.resume import load_weights_image, save_weights_file

    model = dense_model(units=5000)  # 128 x 5000 floats + bias: 2.58 MB
    save_weights_file(model, small_disk / "w.weights.h5")
    copy = dense_model(units=5000)
    load_weights_image(copy, small_disk / "w.weights.h5")
    np.testing.assert_array_equal(copy.get_weights()[0], model.get_weights()[0])


def test_hdf5_files_left_open_by_a_failed_write_are_closed(tmp_path):
    """What `kit run` does after an error: a plugin's half-written HDF5 file is closed now, not at exit."""
    import h5py

    from kit.harness.resume import close_h5_files

    handle = h5py.File(tmp_path / "plugin.h5", "w")
    handle.create_dataset("kernel", data=np.ones((64, 64)))
    assert close_h5_files() >= 1
    assert not handle.id.valid


def test_training_phases_finish_a_partial_epoch_first():
    from kit.harness.trainer import training_phases

    assert training_phases(0, 10, 3) == [(0, 3, 10, 0)]
    assert training_phases(20, 10, 3) == [(2, 3, 10, 20)]
    assert training_phases(23, 10, 3) == [(2, 3, 7, 23)]
    assert training_phases(13, 10, 3) == [(1, 2, 7, 13), (2, 3, 10, 20)]
    assert training_phases(30, 10, 3) == []  # trained to the end; only saving was left


def test_weights_files_hold_what_keras_writes_from_each_variables_own_buffer(tmp_path, monkeypatch):
    """Within `lean_weights_files` (kit's own writes, keras-hub's presets), HDF5 gets a view of each variable
    (Keras's store copies it twice: 94 MB for MiniLM's embedding), and the file is the one `model.save_weights`
    writes: same arrays, dtypes and bfloat16 marks. Other threads, and code outside a block, write Keras's way."""
    import threading

    import h5py
    import keras
    import tensorflow as tf

    import kit.harness.resume as resume

    class Counter(keras.layers.Layer):
        def build(self, shape):
            self.seen = self.add_weight(shape=(3,), dtype="int32", initializer="ones", trainable=False)

        def call(self, x):
            return x

    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, dtype="bfloat16")(Counter()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    keras_way = []  # keys Keras's own conversion wrote
    keras_setitem = resume._keras_setitem
    monkeypatch.setattr(
        resume, "_keras_setitem", lambda store, key, value: keras_way.append(key) or keras_setitem(store, key, value)
    )

    files = {name: tmp_path / f"{name}.weights.h5" for name in ("keras", "kit", "lean", "thread")}
    model.save_weights(files["keras"])
    assert keras_way  # outside a block: Keras's way
    keras_way.clear()
    resume.write_weights(files["kit"], model, with_optimizer=True)
    with pytest.raises(KeyboardInterrupt), resume.lean_weights_files():  # keras-hub's save_to_preset, as kit calls it
        model.save_weights(files["lean"])
        raise KeyboardInterrupt
    assert keras_way == [] and not resume._LEAN_WRITES.get()  # every variable numeric: none went Keras's way
    with resume.lean_weights_files():
        thread = threading.Thread(target=model.save_weights, args=(files["thread"],))
        thread.start()
        thread.join()
    assert keras_way  # the other thread wrote Keras's way

    def contents(path):
        found = {}

        def note(name, item):  # returns None: visititems stops at the first other value
            dataset = isinstance(item, h5py.Dataset)
            found[name] = (item[()], str(item.dtype), dict(item.attrs)) if dataset else dict(item.attrs)

        with h5py.File(path, "r") as handle:
            handle.visititems(note)
        return found

    theirs = contents(files["keras"])
    assert any(value[2].get("dtype") == "bfloat16" for value in theirs.values() if isinstance(value, tuple))
    for name in ("kit", "lean", "thread"):
        mine = contents(files[name])
        assert mine.keys() == theirs.keys() and any(key.startswith("optimizer/vars/") for key in mine), name
        for key, value in theirs.items():
            if isinstance(value, tuple):
                np.testing.assert_array_equal(mine[key][0], value[0])
                assert mine[key][1:] == value[1:], (name, key)
            else:
                assert mine[key] == value, (name, key)
    kernel = model.layers[-1].kernel
    assert np.shares_memory(resume._shared_array(kernel), np.asarray(tf.convert_to_tensor(kernel)))
