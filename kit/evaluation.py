"""Final metrics of a model on one split: shared by training (metrics.json) and `kit eval --data`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def outputs_and_targets(model: Any, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over a batched (x, y) dataset once, keeping targets aligned.

    Through `model.predict`, which splits batches across a distribution strategy's
    replicas (`predict_on_batch` would give each replica the whole batch).
    """
    outputs = model.predict(dataset.map(lambda x, y: x), verbose=0)
    targets = np.concatenate([y.numpy() for _, y in dataset])
    return np.asarray(outputs), targets


def split_metrics(model: Any, task: Any, dataset: Any, report_dir: Path | None, split: str) -> dict[str, float]:
    """The task's final metrics on one split; with `report_dir`, the task's report files too."""
    import keras

    direct = task.evaluate_model(model, dataset)
    if direct is not None:
        return {k: float(v) for k, v in direct.items()}
    outputs, targets = outputs_and_targets(model, dataset)
    loss_fn = keras.losses.get(task.loss()) if isinstance(task.loss(), str) else task.loss()
    metrics = {"loss": float(loss_fn(targets, outputs))}
    metrics.update({k: float(v) for k, v in task.evaluate(targets, outputs).items()})
    metrics["examples"] = int(len(targets))
    if report_dir is not None:
        task.write_reports(report_dir, split, targets, outputs)
    return metrics
