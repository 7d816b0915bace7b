"""Keras callbacks kit adds to runs: JSON-lines history, NaN guard, checkpoint pruning, backbone unfreezing."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import keras


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
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where it happened."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.failed_at: tuple[int, int, float] | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed_at = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


class PruneCheckpoints(keras.callbacks.Callback):
    """Keeps the newest `keep` epoch checkpoints in a folder, deleting older ones."""

    def __init__(self, folder: Path, pattern: str = "epoch-*.weights.h5", keep: int = 3):
        super().__init__()
        self.folder = Path(folder)
        self.pattern = pattern
        self.keep = max(int(keep), 1)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        files = sorted(self.folder.glob(self.pattern))
        for old in files[: -self.keep]:
            old.unlink(missing_ok=True)


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
