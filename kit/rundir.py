"""The run directory's layout: the one place that names what a run writes.

Layout of a run directory::

    config.yaml        the resolved config; `kit run config.yaml` repeats the run
    run.json           status, versions, seed, command, data fingerprint, stage times
    history.jsonl      one JSON line of metrics per epoch
    metrics.json       final metrics keyed by split, then metric name
    curves.png         training curves
    *_SPLIT.json/.png  the task's reports (a confusion matrix...)
    logs/              TensorBoard logs
    checkpoints/       epoch checkpoints (newest `keep`), best.weights.h5
    backup/            training states for exact resume, step-N/ each (removed when complete)
    model/             the trained model: model.keras + kit_model.json (+ the backbone's files)
      preset/          the trained keras-hub backbone and preprocessor, as a keras-hub preset
    export/FORMAT/     what `kit export` writes

Training code and inference code both read a run through `RunDir`; no other
module spells these names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kit.scratch import written_atomically


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary name, flush it to disk, then rename: a crash never leaves half a file."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary name, flush it to disk, then rename: a crash never leaves half a file."""
    with written_atomically(path) as scratch, open(scratch, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class RunDir:
    """A run directory: the paths of everything in it.

    Example:
        >>> run = RunDir("runs/run-1")
        >>> run.model_file    # runs/run-1/model/model.keras
        >>> run.export_dir("saved_model")
    """

    CONFIG = "config.yaml"
    RECORD = "run.json"
    HISTORY = "history.jsonl"
    METRICS = "metrics.json"
    CURVES = "curves.png"
    MODEL = "model"
    MODEL_FILE = "model.keras"
    BUNDLE = "kit_model.json"
    PRESET = "preset"
    BACKUP = "backup"
    CHECKPOINTS = "checkpoints"
    LOCK = ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- files and folders

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    @property
    def record_file(self) -> Path:
        return self.path / self.RECORD

    @property
    def history_file(self) -> Path:
        return self.path / self.HISTORY

    @property
    def metrics_file(self) -> Path:
        return self.path / self.METRICS

    @property
    def curves_file(self) -> Path:
        return self.path / self.CURVES

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def backup_dir(self) -> Path:
        return self.path / self.BACKUP

    @property
    def lock_file(self) -> Path:
        return self.path / self.LOCK

    @property
    def model_dir(self) -> Path:
        return self.path / self.MODEL

    @property
    def model_file(self) -> Path:
        return self.model_dir / self.MODEL_FILE

    @property
    def bundle_file(self) -> Path:
        """kit_model.json: task, input kind, backbone family, learned field states, resolved config."""
        return self.model_dir / self.BUNDLE

    @property
    def preset_dir(self) -> Path:
        return self.model_dir / self.PRESET

    @property
    def adapters_file(self) -> Path:
        return self.model_dir / "adapters.lora.h5"

    def export_dir(self, fmt: str) -> Path:
        return self.path / "export" / fmt

    def report_file(self, name: str, split: str, suffix: str) -> Path:
        """A task's report for one split, e.g. report_file("confusion", "test", ".png")."""
        return self.path / f"{name}_{split}{suffix}"

    # -- the run record

    def read_record(self) -> dict[str, Any] | None:
        """run.json, or None when it is missing or unreadable."""
        try:
            record = json.loads(self.record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def write_record(self, record: dict[str, Any]) -> None:
        write_json_atomic(self.record_file, record)

    def is_run(self) -> bool:
        return self.record_file.is_file()
