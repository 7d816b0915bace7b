"""Run directories: choosing, resuming or refusing one, and the files inside.

Layout of a run directory::

    config.yaml        the resolved config; `kit run config.yaml` repeats the run
    run.json           status, versions, seed, command, data fingerprint, wall time
    history.jsonl      one JSON line of metrics per epoch
    metrics.json       final metrics keyed by split, then metric name
    curves.png         training curves
    logs/              TensorBoard logs
    checkpoints/       epoch checkpoints (newest `keep`), best.weights.h5
    backup/            training states for exact resume, step-N/ each (removed when complete)
    model/             the trained model: model.keras + kit_model.json (+ vocab.txt)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from kit.errors import RunDirError

RUN_FILE = "run.json"
CONFIG_COPY = "config.yaml"


def read_run(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_run(run_dir: Path, record: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / RUN_FILE, record)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary name, then rename: a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CONFIG_COPY
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            keys.append(f"{prefix}{key}")
    return keys


def choose_run_dir(resolved: dict[str, Any], runs_root: Path, requested: Path | None) -> tuple[Path, bool]:
    """Pick the run directory: resume an unfinished run of the same config, else a new one.

    Returns:
        (run_dir, resuming)

    Raises:
        RunDirError: when `requested` holds a complete run, a run of another
            config or task, something that is not a run, or is not writable.
    """
    if requested is not None:
        return _check_requested(Path(requested), resolved)
    runs = sorted(
        (p for p in runs_root.glob("run-*") if p.is_dir() and re.fullmatch(r"run-\d+", p.name)),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if runs:
        latest = runs[-1]
        record = read_run(latest)
        if record and record.get("status") != "complete" and _saved_config(latest) == resolved:
            return latest, True
    number = int(runs[-1].name.split("-")[1]) + 1 if runs else 1
    return _make_writable(runs_root / f"run-{number}"), False


def _check_requested(run_dir: Path, resolved: dict[str, Any]) -> tuple[Path, bool]:
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return _make_writable(run_dir), False
    record = read_run(run_dir)
    if record is None:
        raise RunDirError(
            f"{run_dir} exists and is not a kit run directory; kit will not write into it. Choose another --run-dir."
        )
    saved = _saved_config(run_dir) or {}
    if saved.get("task") != resolved.get("task"):
        raise RunDirError(
            f"{run_dir} holds a run of task '{saved.get('task')}', not '{resolved.get('task')}'. Choose another --run-dir."
        )
    if record.get("status") == "complete":
        raise RunDirError(
            f"{run_dir} already holds a complete run; kit never overwrites one. "
            f"Choose another --run-dir, or evaluate it with `kit eval {run_dir}`."
        )
    changed = _differences(saved, resolved)
    if changed:
        raise RunDirError(
            f"{run_dir} holds an unfinished run of a different config (changed: {', '.join(changed[:5])}). "
            f"Resume it with its own config (`kit run {run_dir / CONFIG_COPY} --run-dir {run_dir}`) or choose another --run-dir."
        )
    return _make_writable(run_dir), True


def _make_writable(run_dir: Path) -> Path:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".kit-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"Cannot write to run directory {run_dir}: {exc.strerror}. Choose a writable --run-dir."
        ) from None
    return run_dir


def require_run_dir(run_dir: Path) -> dict[str, Any]:
    """The run record of a finished run, or a RunDirError saying what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"No run directory at {run_dir}. Pass a folder written by `kit run` (e.g. runs/run-1).")
    record = read_run(run_dir)
    if record is None:
        raise RunDirError(f"{run_dir} is not a kit run directory (no {RUN_FILE}).")
    if not (run_dir / "model" / "kit_model.json").is_file():
        raise RunDirError(
            f"{run_dir} has no trained model yet (status: {record.get('status')}). Finish it with `kit run` first."
        )
    return record
