"""Keras callbacks kit adds to runs, and the list that runs every callback of a training.

kit's own: JSON-lines history, NaN guard, epoch and best checkpoints, backbone
unfreezing, a check that the run folder is still the one being trained.
`TrainingCallbacks` calls them and the plugins' callbacks; `callback_state`
and `set_callback_state` are what exact resume saves and restores of each.
"""

from __future__ import annotations

import errno
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import keras

from kit.console import say
from kit.errors import KitError, PluginError, RunDirError, TrainingError
from kit.harness.resume import save_weights_file


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class JsonHistory(keras.callbacks.Callback):
    """Appends one JSON line per epoch (metrics, learning rate, seconds) to a file.

    On resume, lines for epochs that are being trained again are dropped first,
    so the file always holds one line per finished epoch.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self._first_epoch = True
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()
        if self._first_epoch:
            self._first_epoch = False
            kept = [r for r in read_history(self.path) if r["epoch"] <= epoch]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        record = {"epoch": epoch + 1, **{k: _plain(v) for k, v in (logs or {}).items()}}
        record["seconds"] = round(time.perf_counter() - self._start, 3)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def read_history(path: Path) -> list[dict[str, Any]]:
    """The epochs of a history file; a line cut short by a kill (the last one) is left out."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
    return records


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, saying where; the last good state stays in `backup`."""

    def __init__(self, backup: Path | None = None) -> None:
        super().__init__()
        self.backup = backup
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            # Raised rather than `stop_training`: Keras would validate the broken epoch and checkpoint it.
            raise TrainingError(
                f"Training stopped: the loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}. "
                f"The last good training state is kept in {self.backup}, but training is repeatable, so the same "
                f"config fails the same way: change it (a new run starts). Usual remedies: a lower "
                f"train.learning_rate, train.precision: float32, or check the data for extreme values."
            )


class EpochCheckpoints(keras.callbacks.Callback):
    """Saves the weights at every epoch end as `epoch-NNN.weights.h5`, keeping the newest `keep` files.

    Each file is written to a temporary name and renamed, so a kill or a full
    disk never leaves a truncated checkpoint behind.
    """

    def __init__(self, folder: Path, keep: int = 3, pattern: str = "epoch-*.weights.h5"):
        super().__init__()
        self.folder = Path(folder)
        self.keep = max(int(keep), 1)
        self.pattern = pattern

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        save_weights_file(self.model, self.folder / f"epoch-{epoch + 1:03d}.weights.h5")
        files = sorted(self.folder.glob(self.pattern))
        for old in files[: -self.keep]:
            old.unlink(missing_ok=True)


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's best-only `ModelCheckpoint` (its monitor and comparison), writing through kit's safe writer.

    Keras writes the file in place, straight from HDF5: a kill mid-write
    leaves a truncated `best.weights.h5` that a resumed run never rewrites
    unless a better epoch comes, and a full disk crashes HDF5. The model it
    sees is the run's model with `save_weights` going to
    `kit.harness.resume.save_weights_file`.
    """

    def __init__(self, path: Path, monitor: str):
        # Keras formats the path with the epoch's logs: braces in a folder name must stay braces.
        escaped = str(path).replace("{", "{{").replace("}", "}}")
        super().__init__(escaped, monitor=monitor, save_weights_only=True, save_best_only=True)

    def set_model(self, model: keras.Model) -> None:
        super().set_model(_SavedSafely(model))


class _SavedSafely:
    """A model as a Keras callback sees it, except that `save_weights` writes atomically from memory."""

    def __init__(self, model: keras.Model):
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def save_weights(self, filepath: str, overwrite: bool = True, **kwargs: Any) -> None:
        save_weights_file(self._model, Path(filepath))


class BackboneSchedule(keras.callbacks.Callback):
    """Holds the backbone still for the first `frozen_epochs` epochs, then lets it learn.

    Works with an optimizer from `kit.harness.optim.backbone_rate`: it sets the
    backbone's learning-rate scale to 0 while frozen and back to the scale the
    optimizer was built with afterwards. Set at every epoch's start, so a
    resumed run lands in the right phase.
    """

    def __init__(self, frozen_epochs: int = 0):
        super().__init__()
        self.frozen_epochs = int(frozen_epochs)
        self._scale: float | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        variable = self.model.optimizer.backbone_scale
        if self._scale is None:
            self._scale = float(variable.numpy())
        frozen = epoch < self.frozen_epochs
        variable.assign(0.0 if frozen else self._scale)
        if self.frozen_epochs and epoch == self.frozen_epochs:
            print(f"kit: epoch {epoch + 1}: backbone unfrozen", file=sys.stderr, flush=True)


class ReportEpochs(keras.callbacks.Callback):
    """Hands each epoch's logs to `report(epoch, logs)` and stops training when it returns True.

    `kit tune` gives a trial's pruner the per-epoch metric this way: a trial it
    prunes stops like a run stopped early (its state saved as stopped, then
    evaluated and saved), so its run folder is an ordinary complete run.
    """

    def __init__(self, report: Callable[[int, dict[str, Any]], bool]):
        super().__init__()
        self.report = report

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.report(epoch, dict(logs or {})):
            self.model.stop_training = True


class RunFolderGuard(keras.callbacks.Callback):
    """Stops training when the run folder was deleted or replaced: kit then writes nowhere else.

    A run folder removed while training would otherwise be half re-created by
    the next save, or, once another `kit run` made a new folder of that name,
    written into by two runs. `lock` is the run's `kit.harness.rundir.RunLock`.
    """

    def __init__(self, lock: Any):
        super().__init__()
        self.lock = lock

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        check_run_folder(self.lock)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        check_run_folder(self.lock)


# ------------------------------------------------------------ callback state

# What Keras's own callbacks change while training (their constructor arguments they keep as given).
KERAS_STATE = {
    "EarlyStopping": ("wait", "stopped_epoch", "best", "best_epoch", "best_weights"),
    "ModelCheckpoint": ("best", "_batches_seen_since_last_saving", "_last_batch_seen"),
    "ReduceLROnPlateau": ("wait", "cooldown_counter", "best"),
}


def has_state(callback: keras.callbacks.Callback) -> bool:
    """Whether exact resume saves this callback's state: it defines `get_state`, or is a Keras one that has state."""
    return callable(getattr(callback, "get_state", None)) or _keras_state(callback) is not None


def _keras_state(callback: keras.callbacks.Callback) -> tuple[str, ...] | None:
    for name, attributes in KERAS_STATE.items():
        if isinstance(callback, getattr(keras.callbacks, name)):
            return attributes
    return None


def callback_state(callback: keras.callbacks.Callback) -> Any:
    """The state `callback` carries from one epoch to the next, checked to be storable."""
    get_state = getattr(callback, "get_state", None)
    if callable(get_state):
        state = get_state()
    else:
        state = {name: getattr(callback, name, None) for name in _keras_state(callback) or ()}
    check_storable(state)
    return state


def set_callback_state(callback: keras.callbacks.Callback, state: Any) -> None:
    set_state = getattr(callback, "set_state", None)
    if callable(set_state):
        set_state(state)
        return
    for name, value in state.items():
        setattr(callback, name, value)


def check_storable(value: Any, where: str = "the state") -> None:
    """Refuse what a training state cannot hold: anything but JSON values, NumPy arrays and lists of them."""
    import numpy as np

    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key {key!r}; keys must be strings")
            check_storable(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_storable(item, f"{where}[{index}]")
    elif not (value is None or isinstance(value, (bool, int, float, str, np.ndarray, np.generic))):
        raise TypeError(
            f"{where} is a {type(value).__name__}; a callback state holds JSON values (dict, list, str, "
            f"number, bool, None) and NumPy arrays"
        )


# ------------------------------------------------------------- the callbacks


def plain_logs(logs: Any) -> dict[str, Any]:
    """Logs with tensors turned into Python numbers (a vector metric's into a NumPy array), in sorted order, as
    Keras's own callback list does (`pythonify_logs`)."""
    plain: dict[str, Any] = {}
    for key, value in sorted((logs or {}).items()):
        if isinstance(value, dict):
            plain.update(plain_logs(value))
            continue
        try:
            value = keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else value
            value = float(value)
        except (TypeError, ValueError):
            pass
        plain[key] = value
    return plain


class TrainingCallbacks(keras.callbacks.CallbackList):
    """Every callback of a run, called through all of the run's `model.fit` calls as one training.

    A resumed run finishes an interrupted epoch with a short `model.fit`, then
    fits the remaining epochs (`kit.harness.trainer.training_phases`). Keras
    would start each fit afresh: `on_train_begin` again (early stopping forgets
    its best), the epoch's batches counted from 0, "Epoch 2/2" for the second
    of four. Through this list callbacks see one `on_train_begin` (`start`, which
    then restores their saved states) and one `on_train_end` (`finish`), the
    true batch numbers (`first_batch`) and the run's epochs; the progress bar
    shows "Epoch 3/4".

    A plugin's callback that fails (any exception, `sys.exit`) is reported as a
    `PluginError` naming the plugin and the callback; `owners` maps a callback's
    id to its plugin.

    Args:
        callbacks: kit's and the plugins' callbacks, in calling order.
        owners: `id(callback)` -> plugin name, for plugin callbacks.
        model: the model being trained.
        verbose, epochs, steps: Keras's `fit` parameters for the whole run.
    """

    def __init__(self, callbacks: list, owners: dict[int, str], model: keras.Model, **params: Any):
        self.owners = owners
        super().__init__(callbacks, add_history=True, add_progbar=params.get("verbose", 0) != 0, model=model, **params)
        # Synchronously, always: kit's callbacks order matters (the state saver runs last) and errors must surface.
        self._async_train = self._async_test = self._async_predict = False
        self.first_batch = 0  # batches of the current epoch trained before this `fit`
        self.metric_state: list | None = None  # the cut-short epoch's running metrics, from the saved state
        self.logs: Any = None
        self.validation: Any = None  # `kit.harness.validation.EpochValidation` when kit validates, not `fit`
        self._validation_logs: dict[str, float] = {}

    # -- the run's begin and end

    def start(self, states: dict[str, Any] | None = None) -> None:
        """Begin the training: `on_train_begin` for every callback, then their saved states (when resuming)."""
        self._each("on_train_begin", None)
        if states is not None:
            self.restore(states)

    def finish(self) -> None:
        """End the training: `on_train_end` for every callback, with the last epoch's logs."""
        self._each("on_train_end", self.logs)

    def on_train_begin(self, logs: Any = None) -> None:
        """One `fit` begins: nothing for the callbacks (see `start`)."""

    def on_train_end(self, logs: Any = None) -> None:
        """One `fit` ends: remember its logs for `finish`."""
        self.logs = plain_logs({**logs, **self._validation_logs}) if logs else self.logs

    # -- forwarded

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if self.first_batch and self.metric_state is not None:
            self._continue_metrics()
        self._each("on_epoch_begin", epoch, plain_logs(logs))

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.validation is not None:  # where `fit` would have validated, just before this call
            self._validation_logs = self.validation.validate(self, keep=epoch + 1 >= self.params["epochs"])
        self._each("on_epoch_end", epoch, plain_logs({**(logs or {}), **self._validation_logs}))
        self.first_batch = 0

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._each("on_train_batch_begin", batch + self.first_batch, plain_logs(logs))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._each("on_train_batch_end", batch + self.first_batch, plain_logs(logs))

    def on_test_begin(self, logs: Any = None) -> None:
        self._each("on_test_begin", plain_logs(logs))

    def on_test_end(self, logs: Any = None) -> None:
        self._each("on_test_end", plain_logs(logs))

    def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._each("on_test_batch_begin", batch, plain_logs(logs))

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self._each("on_test_batch_end", batch, plain_logs(logs))

    def on_predict_begin(self, logs: Any = None) -> None:
        self._each("on_predict_begin", plain_logs(logs))

    def on_predict_end(self, logs: Any = None) -> None:
        self._each("on_predict_end", plain_logs(logs))

    def on_predict_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._each("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Any = None) -> None:
        self._each("on_predict_batch_end", batch, logs)

    def _continue_metrics(self) -> None:
        """Give the cut-short epoch's metrics their running totals back (Keras has just reset them), so its
        steps log, and its end reports, what an uninterrupted epoch would."""
        from kit.harness.resume import metric_variables

        variables, values = metric_variables(self.model), self.metric_state
        self.metric_state = None
        if len(variables) != len(values) or any(tuple(v.shape) != w.shape for v, w in zip(variables, values)):
            say("kit: the saved state's metric totals do not fit this model's metrics; this epoch's start afresh.")
            return
        for variable, value in zip(variables, values):
            variable.assign(value)

    def _each(self, method: str, *args: Any) -> None:
        for callback in self.callbacks:
            self.guarded(callback, method, lambda cb=callback: getattr(cb, method)(*args))

    # -- states

    def keyed(self) -> Iterator[tuple[str, keras.callbacks.Callback]]:
        """(key, callback) for each callback with a state; a key is its class, numbered when it repeats."""
        seen: dict[str, int] = {}
        for callback in self.callbacks:
            if not has_state(callback):
                continue
            name = f"{type(callback).__module__}.{type(callback).__qualname__}"
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}#{seen[name]}"), callback

    def states(self) -> dict[str, Any]:
        """Every stateful callback's state, by key."""
        return {key: self.guarded(cb, "get_state", lambda cb=cb: callback_state(cb)) for key, cb in self.keyed()}

    def restore(self, states: dict[str, Any]) -> None:
        """Give each callback its saved state; say which have none (they start afresh) or are gone."""
        keys = set()
        for key, callback in self.keyed():
            keys.add(key)
            if key in states:
                self.guarded(callback, "set_state", lambda cb=callback, key=key: set_callback_state(cb, states[key]))
            else:
                say(
                    f"kit: the saved training state has nothing for callback {type(callback).__name__} (it was not "
                    f"part of the run then); it starts afresh, so this run may differ from an uninterrupted one."
                )
        for key in sorted(set(states) - keys):
            say(f"kit: the saved state of callback {key} is not used: that callback is no longer part of the run.")

    # -- plugin failures

    def guarded(self, callback: keras.callbacks.Callback, method: str, call: Callable[[], Any]) -> Any:
        """`call()`; a plugin callback's failure becomes a PluginError naming the plugin and the callback."""
        plugin = self.owners.get(id(callback))
        if plugin is None:
            return call()
        try:
            return call()
        except BaseException as exc:
            if _passes_through(exc):
                raise
            raise PluginError(plugin_failure(plugin, f"its callback {type(callback).__name__}.{method}", exc)) from None


def _passes_through(exc: BaseException) -> bool:
    """What keeps its meaning when it comes out of a plugin's callback: a real Ctrl-C or signal
    (`kit.harness.run.SignalStop`, raised by kit's handler), kit's own errors, and a full disk.
    A plugin's own KeyboardInterrupt or SystemExit is that plugin failing: it must not end kit."""
    if isinstance(exc, KitError) or getattr(exc, "signal", None) is not None:
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def plugin_failure(plugin: str, where: str, exc: BaseException) -> str:
    """One line for plugin code that failed `where` (e.g. "its callback X.on_epoch_end")."""
    if isinstance(exc, SystemExit):
        what = f"called sys.exit({exc.code!r}); a plugin must not end kit"
    else:
        what = f"{type(exc).__name__}: {exc}".strip().splitlines()[0].rstrip(":")
    return (
        f"Plugin '{plugin}' failed in {where}: {what}. Nothing saved so far is lost (a run resumes from its last "
        f"saved training state): fix the plugin, or leave it out, then run the same command again."
    )


def check_run_folder(lock: Any) -> None:
    """Raise RunDirError when the run folder is gone or replaced (see `RunFolderGuard`)."""
    if lock is not None and not lock.still_held():
        raise RunDirError(
            f"The run folder {lock.run_dir} was deleted or replaced while this run was training in it; kit stopped "
            f"rather than write into another folder. Run `kit run` again to start a new run."
        )


class StageTimer(keras.callbacks.Callback):
    """Splits `model.fit`'s time into the first step (tracing), steady steps, validation and callbacks."""

    def __init__(self, stages: Any):
        super().__init__()
        self.stages = stages
        self._mark: float | None = None
        self._first = True
        self.steps = 0  # steps trained in this process (the first one, traced, included)

    def _lap(self) -> float:
        now = time.perf_counter()
        elapsed = now - self._mark if self._mark is not None else 0.0
        self._mark = now
        return elapsed

    def on_train_begin(self, logs: Any = None) -> None:
        self._lap()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.stages.add("callbacks", self._lap())  # since the last step ended: other callbacks, epoch ends

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.stages.add("first step" if self._first else "training", self._lap())
        self._first = False
        self.steps += 1

    def on_test_begin(self, logs: Any = None) -> None:
        self.stages.add("callbacks", self._lap())

    def on_test_end(self, logs: Any = None) -> None:
        self.stages.add("validation", self._lap())

    def on_train_end(self, logs: Any = None) -> None:
        self.stages.add("callbacks", self._lap())
