"""`kit runs` and `kit runs compare` on run folders written here (no training): what the table shows and
leaves out, sorting, damaged and unfinished runs, the compare PNG, and no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kit.cli import cli
from tests.conftest import project

BASE = {"task": "regression", "seed": 42, "model": {"hidden_units": [16], "dropout": 0.1}, "train": {"epochs": 3}}


def fake_run(folder: Path, status="complete", rmse=None, changes=None, epochs=3, trial=None) -> Path:
    folder.mkdir(parents=True)
    config = json.loads(json.dumps(BASE))
    for key, value in (changes or {}).items():
        section, name = key.split(".")
        config[section][name] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    record = {"status": status, "task": "regression", "wall_seconds": 12.5}
    if trial is not None:
        record["trial"] = trial
    (folder / "run.json").write_text(json.dumps(record))
    if rmse is not None:
        metrics = {"validation": {"rmse": rmse, "r2": 1 - rmse, "examples": 10}, "test": {"rmse": rmse + 0.1}}
        (folder / "metrics.json").write_text(json.dumps(metrics))
    history = [
        {"epoch": e, "loss": 1 / e, "val_loss": 1.2 / e, "rmse": rmse or 1, "seconds": 0.1}
        for e in range(1, epochs + 1)
    ]
    (folder / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    return folder


@pytest.fixture
def runs_project(tmp_path):
    folder = project(tmp_path / "p", "task: regression\ndata:\n  train: data.csv\n")
    runs = folder / "runs"
    fake_run(runs / "run-1", rmse=0.5)
    fake_run(runs / "run-2", rmse=0.3, changes={"model.dropout": 0.2})
    fake_run(runs / "run-10", status="running", changes={"train.epochs": 5})  # killed: no lock held
    pruned = {"study": "p", "number": 0, "params": {}, "pruned_at_epoch": 2}
    fake_run(runs / "tune-p" / "trial-0", rmse=0.9, changes={"model.hidden_units": [64]}, trial=pruned)
    (runs / "run-3").mkdir()
    (runs / "run-3" / "run.json").write_text("{damaged")
    return folder


def test_table_shows_what_differs_and_final_metrics(runs_project, runner):
    result = runner.invoke(cli, ["runs", str(runs_project)])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == [
        "run", "status", "task", "model.dropout", "model.hidden_units", "train.epochs",
        "validation.rmse", "validation.r2", "test.rmse", "seconds",
    ]  # fmt: skip
    assert [row.split()[0] for row in rows] == ["run-1", "run-2", "run-10", "tune-p/trial-0"]  # run-3 is damaged
    assert rows[2].split()[1] == "stopped" and rows[3].split()[1] == "pruned@2"


def test_sort_puts_the_best_first(runs_project, runner):
    rows = runner.invoke(cli, ["runs", str(runs_project), "--sort", "rmse"]).output.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["run-2", "run-1", "tune-p/trial-0", "run-10"]  # no metric: last
    rows = runner.invoke(cli, ["runs", str(runs_project), "--sort", "validation.r2"]).output.splitlines()[1:]
    assert [row.split()[0] for row in rows][:3] == ["run-2", "run-1", "tune-p/trial-0"]  # a score: highest first


def test_json_has_every_metric_and_the_trial(runs_project, runner):
    rows = json.loads(runner.invoke(cli, ["runs", str(runs_project), "--json"]).output)
    trial = next(r for r in rows if r["run"] == "tune-p/trial-0")
    assert trial["trial"]["pruned_at_epoch"] == 2 and trial["metrics"]["validation"]["examples"] == 10
    assert trial["config"] == {"model.dropout": 0.1, "model.hidden_units": [64], "train.epochs": 3}


def test_a_folder_of_runs_and_an_empty_project(runs_project, runner, tmp_path):
    assert "run-2" in runner.invoke(cli, ["runs", str(runs_project / "runs")]).output
    empty = project(tmp_path / "empty", "task: regression\ndata:\n  train: data.csv\n")
    assert "no runs in" in runner.invoke(cli, ["runs", str(empty)]).output


def test_compare_diff_metrics_and_png(runs_project, runner, tmp_path):
    runs = runs_project / "runs"
    out = tmp_path / "c.png"
    result = runner.invoke(cli, ["runs", "compare", str(runs / "run-1"), str(runs / "run-2"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "model.dropout" in result.output and "train.epochs" not in result.output
    assert any(line.split()[:3] == ["validation.rmse", "0.5", "0.3"] for line in result.output.splitlines())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "notes.png").write_text("mine")
    again = runner.invoke(
        cli, ["runs", "compare", str(runs / "run-1"), str(runs / "run-2"), "-o", str(tmp_path / "notes.png")]
    )
    assert again.exit_code == 2 and "not a PNG image" in again.output
    assert (tmp_path / "notes.png").read_text() == "mine"


@pytest.mark.parametrize("argv", [["runs", "."], ["runs", "--help"], ["tune", "--help"], ["runs", "compare", "--help"]])
def test_runs_and_tune_help_do_not_import_tensorflow(tmp_path, argv):
    code = (
        "import sys; from kit.cli import cli\n"
        f"try:\n    cli({argv!r}, prog_name='kit')\nexcept SystemExit:\n    pass\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stderr.strip().endswith("NO-TF"), result.stderr
