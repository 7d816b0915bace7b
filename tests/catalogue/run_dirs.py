"""Catalogue: run directories, trained models and what is read from them."""

from __future__ import annotations

import errno
import json
from pathlib import Path

from kit.cli import cli
from tests.catalogue import case, tabular_project


def finished_run(root: Path, task: str = "regression") -> Path:
    run_dir = root / "done"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "complete"}))
    (run_dir / "config.yaml").write_text(f"task: {task}\n")
    return run_dir


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


@case("run directories", "No run directory at")
def evaluate_a_missing_run(root, mp):
    """`kit eval` on a run that does not exist"""
    return ["eval", str(root / "runs" / "run-9")]


@case("run directories", "needs a run of the generation task", exit_code=2)
def generate_from_a_regression_run(root, mp):
    """`kit generate` on a regression run"""
    from click.testing import CliRunner

    folder = tabular_project(root)
    assert CliRunner().invoke(cli, ["run", str(folder)]).exit_code == 0
    return ["generate", str(folder / "runs" / "run-1"), "Once upon a time"]


@case("run directories", "needs unsafe deserialisation (it contains Python code, e.g. a Lambda layer)")
def model_needing_unsafe_loading(root, mp):
    """A `model.keras` holding a Lambda layer (Python code); models load in Keras safe mode, `--unsafe` opts out

    A model.keras with a Lambda layer (arbitrary code) loads only with --unsafe.
    """
    import keras
    from click.testing import CliRunner

    folder = tabular_project(root)
    assert CliRunner().invoke(cli, ["run", str(folder)]).exit_code == 0
    inputs = keras.Input((1,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(folder / "runs/run-1/model/model.keras")
    return ["predict", str(folder / "runs" / "run-1"), str(folder.parent / "table.csv")]
