"""The MLflow logger (kit_plugins.tracking): a run logged to a local MLflow store, read back with MLflow's client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kit.cli import cli
from tests.conftest import make_tabular, project

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow

TRACKED = """task: regression
data:
  train: {data}
  target: y
model:
  hidden_units: [8]
train:
  epochs: 3
  verbose: 0
tracking:
  mlflow: true
"""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("tracked")
    folder = project(root / "p", TRACKED.format(data=make_tabular(root)))
    result = CliRunner().invoke(cli, ["run", str(folder)])
    assert result.exit_code == 0, result.output
    client = mlflow.tracking.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("p")
    (run,) = client.search_runs([experiment.experiment_id])
    return folder, client, run


def test_params_epoch_metrics_and_final_metrics(tracked):
    folder, client, run = tracked
    assert run.info.run_name == "run-1" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3" and run.data.params["model.hidden_units"] == "[8]"
    assert "data.train" not in run.data.params
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]
    history = [json.loads(line) for line in (folder / "runs" / "run-1" / "history.jsonl").read_text().splitlines()]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == pytest.approx(
        [h["loss"] for h in history]
    )
    metrics = json.loads((folder / "runs" / "run-1" / "metrics.json").read_text())
    assert run.data.metrics["test.rmse"] == pytest.approx(metrics["test"]["rmse"])
    assert run.data.tags["kit.task"] == "regression"


def test_plots_files_and_model_are_artifacts_in_the_project(tracked):
    folder, client, run = tracked
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "metrics.json", "config.yaml", "run.json", "model"} <= names
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/model.keras"}
    assert run.info.artifact_uri.startswith((folder / "mlruns").as_uri())  # the local store is in the project
    saved = Path(run.info.artifact_uri.removeprefix("file://")) / "model" / "model.keras"
    code = "import keras; print(keras.saving.load_model(__import__('sys').argv[1]).count_params())"
    loaded = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and int(loaded.stdout.split()[-1]) > 0, loaded.stderr[-2000:]


def test_a_resumed_run_logs_into_the_same_mlflow_run(tracked):
    """The MLflow run id is the logger's callback state, which kit's exact resume saves and restores."""
    from kit_plugins.tracking import MlflowLogger

    folder, client, run = tracked
    config = SimpleNamespace(
        tracking=SimpleNamespace(uri=f"sqlite:///{folder / 'mlflow.db'}", experiment=None),
        project_dir=folder,
        name=None,
        task="regression",
        hyperparameters=lambda: {"train.epochs": 3},
    )
    logger = MlflowLogger(SimpleNamespace(config=config, run_dir=folder / "runs" / "run-1", trial=None))
    logger.set_state({"run_id": run.info.run_id})
    logger.log_epoch(3, {"loss": 0.5})
    assert logger.get_state() == {"run_id": run.info.run_id}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")][-1] == 4
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_tracking_without_mlflow_installed_says_what_to_install(tmp_path, runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    folder = project(tmp_path / "p", TRACKED.format(data=make_tabular(tmp_path)))
    result = runner.invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1 and 'pip install "kit[mlflow]"' in result.output
    assert "Traceback" not in result.output
