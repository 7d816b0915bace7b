"""Exact resume: the training state kit saves while training, and restores when a run starts again.

A state is everything an uninterrupted run would carry forward: the model's
weights and the optimizer's slots and step count (one Keras `.weights.h5`),
the random-number state of every dropout (Keras keeps it in seed-generator
variables that weights files leave out), and the global step, which fixes
the data position (see `kit.data.pipeline.training_stream`) and the
learning-rate schedule's position.

States are written atomically: into a hidden temporary folder, flushed, then
renamed to `backup/step-000001234/`. The newest `keep` are kept. A state that
fails to load (a truncated file, a disk error) is reported and the previous
one is used.

kit replaces Keras's `BackupAndRestore` with this because that callback
restarts an interrupted epoch from its first batch with mid-epoch weights, does
not save dropout's random state, and writes its file in place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import keras
import numpy as np

from kit.console import say

STATE_PREFIX = "step-"
WEIGHTS = "state.weights.h5"
RANDOM = "random.npz"
META = "state.json"


def seed_states(model: keras.Model) -> list[Any]:
    """The state variables of the model's seed generators (dropout's random streams), in a fixed order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def global_step(model: keras.Model) -> int:
    return int(model.optimizer.iterations.numpy())


def saved_states(folder: Path) -> list[Path]:
    """Complete states in `folder`, newest first (temporary folders of interrupted writes are ignored)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.startswith(STATE_PREFIX)), reverse=True)


def save_state(model: keras.Model, folder: Path, epoch: int, keep: int = 2) -> Path:
    """Write the training state at the model's current step; return its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    step = global_step(model)
    target = folder / f"{STATE_PREFIX}{step:09d}"
    scratch = Path(tempfile.mkdtemp(prefix=".writing-", dir=folder))
    try:
        model.save_weights(str(scratch / WEIGHTS))
        np.savez(scratch / RANDOM, *[np.asarray(v.numpy()) for v in seed_states(model)])
        (scratch / META).write_text(json.dumps({"step": step, "epoch": epoch}), encoding="utf-8")
        for name in (WEIGHTS, RANDOM, META):
            _fsync(scratch / name)
        if target.exists():  # the same step saved twice (an epoch end that is also a step save)
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for old in saved_states(folder)[max(keep, 1) :]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def restore_state(model: keras.Model, folder: Path) -> int:
    """Load the newest state that loads cleanly; return its global step (0 when there is none)."""
    for state in saved_states(folder):
        try:
            _load(model, state)
        except Exception as exc:  # noqa: BLE001 - any failure means this state is unusable
            say(f"kit: the saved state {state} is damaged ({type(exc).__name__}: {exc}); trying an older one.")
            continue
        step = json.loads((state / META).read_text(encoding="utf-8"))["step"]
        say(f"kit: resuming from step {step} ({state.name})")
        return step
    return 0


def _load(model: keras.Model, state: Path) -> None:
    meta = json.loads((state / META).read_text(encoding="utf-8"))
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(str(state / WEIGHTS))
    with np.load(state / RANDOM) as saved:
        values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    variables = seed_states(model)
    if len(values) != len(variables):
        raise ValueError(f"it holds {len(values)} random states, the model has {len(variables)}")
    for variable, value in zip(variables, values):
        variable.assign(value)
    if global_step(model) != meta["step"]:
        raise ValueError(f"its optimizer is at step {global_step(model)}, its record says {meta['step']}")


class SaveTrainingState(keras.callbacks.Callback):
    """Saves the training state at every epoch end, every `every_steps` steps, and when asked to stop.

    SIGINT (Ctrl-C) and SIGTERM (what schedulers and `kill` send) set a flag
    inside `stopping_on_signals`; the next batch end saves the state and stops
    training, so the run resumes from that exact step.
    """

    def __init__(self, folder: Path, every_steps: int | None = None, keep: int = 2):
        super().__init__()
        self.folder = Path(folder)
        self.every_steps = every_steps
        self.keep = keep
        self.epoch = 0
        self.stop_requested: str | None = None
        self.stopped_at: int | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if not _finite(logs):
            return  # the NaN guard stops the run; the last good state stays the newest
        if self.stop_requested:
            save_state(self.model, self.folder, self.epoch, self.keep)
            self.stopped_at = global_step(self.model)
            self.model.stop_training = True
        elif self.every_steps and global_step(self.model) % self.every_steps == 0:
            save_state(self.model, self.folder, self.epoch, self.keep)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if _finite(logs) and not self.stopped_at:
            save_state(self.model, self.folder, epoch + 1, self.keep)

    @contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """While training: the first SIGINT/SIGTERM saves and stops at the next batch, a second one quits now."""

        def handler(number: int, frame: Any) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = signal.Signals(number).name
            say(f"\nkit: {self.stop_requested} received: saving the training state after this step...")

        handled = (signal.SIGINT, signal.SIGTERM)
        try:
            previous = {number: signal.signal(number, handler) for number in handled}
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            for number, old in previous.items():
                signal.signal(number, old)


def _finite(logs: Any) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))
