"""Experiment tracking: every run logged to MLflow, through the public `register_callbacks` hook.

Turned on in kit.yaml (`pip install "kit[mlflow]"` first)::

    tracking:
      mlflow: true
      uri: http://mlflow.example.com:5000   # default: MLFLOW_TRACKING_URI, else a local store in the project
      experiment: reviews                   # default: the project name

Each kit run (and each `kit tune` trial) is one MLflow run, named after its
run folder: the config as parameters (dotted keys), the per-epoch metrics at
every epoch, then, once the run is complete, its final metrics
(`validation.rmse`, `test.accuracy`...), its plots, metrics.json, config.yaml,
run.json and the model folder (`model.keras` loads with plain Keras) as
artifacts. A resumed run goes on logging into the same MLflow run: the logger's
state (the MLflow run id) is part of kit's saved training state.

The local store is MLflow 3's recommended one: a SQLite file (`mlflow.db`) with
artifacts in `mlruns/`; `mlflow ui --backend-store-uri sqlite:///mlflow.db`
in the project shows it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import kit
from kit.errors import ConfigError

LOCAL_STORE, LOCAL_ARTIFACTS = "mlflow.db", "mlruns"
MAX_BATCH = 100  # MLflow takes at most 100 parameters per call


def tracking_uri(run: Any) -> str:
    """`tracking.uri`, else MLFLOW_TRACKING_URI, else the project's local store."""
    tracking = run.config.tracking
    if tracking.uri:
        return tracking.uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run.config.project_dir.resolve() / LOCAL_STORE}"


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            'tracking.mlflow is true but MLflow is not installed: pip install "kit[mlflow]" (or set '
            "tracking.mlflow: false)."
        ) from None
    return mlflow


class MlflowLogger:
    """Logs one kit run to one MLflow run (see the module docstring). Built by `logger_for`."""

    def __init__(self, run: Any):
        self.context = run
        self.client: Any = None
        self.run_id: str | None = None
        self.params_logged = False

    # -- exact resume: the MLflow run id is this callback's state

    def get_state(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def set_state(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or self.run_id

    # -- MLflow

    def mlflow_run(self) -> str:
        """The MLflow run of this kit run, created at its first use (a resumed run takes its saved id first)."""
        if self.client is None:
            mlflow = _mlflow()
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # an unreachable server fails in seconds
            self.client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri(self.context))
        if self.run_id is None:
            experiment = self._experiment()
            created = self.client.create_run(experiment, run_name=self._name(), tags=self._tags())
            self.run_id = created.info.run_id
        if not self.params_logged:
            self._log_params()
        return self.run_id

    def _experiment(self) -> str:
        config = self.context.config
        name = config.tracking.experiment or config.name or config.project_dir.name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if not (config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
            location = (config.project_dir.resolve() / LOCAL_ARTIFACTS).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def _name(self) -> str:
        path = Path(self.context.run_dir)
        return f"{path.parent.name}/{path.name}" if path.parent.name.startswith("tune-") else path.name

    def _tags(self) -> dict[str, str]:
        tags = {"kit.run_dir": str(self.context.run_dir), "kit.task": self.context.config.task}
        trial = self.context.trial
        if trial is not None:
            tags.update({"kit.study": str(trial.study), "kit.trial": str(trial.number)})
        return tags

    def _log_params(self) -> None:
        from mlflow.entities import Param

        flat = self.context.config.hyperparameters()
        params = [Param(key, str(value)[:6000]) for key, value in flat.items()]
        existing = set(self.client.get_run(self.run_id).data.params)
        params = [p for p in params if p.key not in existing]  # a resumed run logged them already
        for start in range(0, len(params), MAX_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + MAX_BATCH])
        self.params_logged = True

    def log_epoch(self, epoch: int, logs: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        run_id, now = self.mlflow_run(), int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, epoch + 1) for k, v in logs.items() if isinstance(v, (int, float))]
        self.client.log_batch(run_id, metrics=metrics)

    def finish(self, metrics: dict[str, Any]) -> None:
        """The complete run: final metrics, plots and files, the model folder; the MLflow run marked finished."""
        from mlflow.entities import Metric

        run_id, run = self.mlflow_run(), self.context.run
        now = int(time.time() * 1000)
        final = [
            Metric(f"{split}.{name}", float(value), now, 0)
            for split, values in metrics.items()
            for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        self.client.log_batch(run_id, metrics=final)
        trial = self.context.trial
        if trial is not None and getattr(trial, "pruned_at_epoch", None):
            self.client.set_tag(run_id, "kit.pruned_at_epoch", str(trial.pruned_at_epoch))
        for path in sorted(run.path.glob("*.png")) + [run.metrics_file, run.config_file, run.record_file]:
            if path.is_file():
                self.client.log_artifact(run_id, str(path))
        if run.model_dir.is_dir():
            self.client.log_artifacts(run_id, str(run.model_dir), artifact_path="model")
        self.client.set_terminated(run_id, "FINISHED")


def logger_for(run: Any) -> Any:
    """The Keras callback that feeds an `MlflowLogger` each epoch; the logger also finishes the run."""
    import keras

    logger = MlflowLogger(run)

    class MlflowCallback(keras.callbacks.Callback):
        """Per-epoch metrics to MLflow; its state (the MLflow run id) resumes with the run."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logger.log_epoch(epoch, dict(logs or {}))

        def get_state(self) -> dict[str, Any]:
            return logger.get_state()

        def set_state(self, state: dict[str, Any]) -> None:
            logger.set_state(state)

    run.when_complete(logger.finish)
    return MlflowCallback()


@kit.hookimpl
def register_callbacks(register: Any, run: Any) -> None:
    if run.config.tracking.mlflow:
        _mlflow()  # not installed: say so before training starts
        register(logger_for(run))
