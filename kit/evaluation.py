"""Final metrics of a model on one split: shared by training (metrics.json) and `kit eval --data`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def outputs_and_targets(model: Any, dataset: Any, traced: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over a batched (x, y) dataset once, keeping targets aligned.

    Dense layers are fused with their bias and activation (`kit.fused_dense`). On one replica the model
    runs in one function traced for the dataset's element spec: traced once, where Keras's `predict`
    traces for the first batch's exact shape and again when a batch of another length comes (1.3-1.8 s of
    MiniLM's evaluation). Under a strategy with several replicas, `model.predict`, which splits batches
    across them (`predict_on_batch` would give each replica the whole batch); for a model with its own
    `predict_step`, `model.predict`, which runs it. `traced`: functions already traced for this model, by
    input spec, shared between calls (a run's validation and test splits: one trace instead of two).
    """
    from kit.fused_dense import fused_dense_layers

    with fused_dense_layers():
        if _one_replica(model) and not own_predict_step(model):
            found = _outputs_traced_once(model, dataset, {} if traced is None else traced)
            if found is not None:
                return found
        outputs = model.predict(dataset.map(lambda x, y: x), verbose=0)
    targets = np.concatenate([y.numpy() for _, y in dataset])
    return np.asarray(outputs), targets


def _one_replica(model: Any) -> bool:
    return getattr(getattr(model, "distribute_strategy", None), "num_replicas_in_sync", 1) == 1


def own_predict_step(model: Any) -> bool:
    """Whether the model's class changes Keras's `predict_step` (as keras-hub's detectors do): `predict` runs it."""
    import keras

    return getattr(type(model), "predict_step", None) is not getattr(keras.Model, "predict_step", None)


def _outputs_traced_once(model: Any, dataset: Any, traced: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(outputs, targets) through one function traced for the dataset's inputs (or the one in `traced` for
    the same inputs); None for an empty dataset."""
    import tensorflow as tf

    spec = dataset.element_spec[0]
    key = repr(spec)  # TensorSpecs' shapes, dtypes and names, in the structure's order
    if key not in traced:
        traced[key] = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    forward = traced[key]
    outputs, targets = [], []
    for x, y in dataset:
        outputs.append(tf.nest.map_structure(lambda t: t.numpy(), forward(x)))
        targets.append(y.numpy())
    if not outputs:
        return None  # Keras's predict says what is wrong with an empty split
    return joined_batches(outputs, targets)


def joined_batches(outputs: list, targets: list) -> tuple[np.ndarray, np.ndarray]:
    """Batches' outputs (NumPy, in the model's output structure) and targets, each joined into one array."""
    import tensorflow as tf

    return np.asarray(tf.nest.map_structure(lambda *parts: np.concatenate(parts), *outputs)), np.concatenate(targets)


def split_metrics(
    model: Any,
    task: Any,
    dataset: Any,
    report_dir: Path | None,
    split: str,
    traced: dict | None = None,
    kept: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """The task's final metrics on one split; with `report_dir`, the task's report files too. `traced`: as
    `outputs_and_targets` takes it, to share one traced model between splits. `kept`: the model's (outputs,
    targets) on this split already (the last epoch's validation, `kit.harness.validation`)."""
    import keras

    direct = task.evaluate_model(model, dataset)
    if direct is not None:
        return {k: float(v) for k, v in direct.items()}
    outputs, targets = kept if kept is not None else outputs_and_targets(model, dataset, traced)
    loss_fn = keras.losses.get(task.loss()) if isinstance(task.loss(), str) else task.loss()
    metrics = {"loss": float(loss_fn(targets, outputs))}
    metrics.update({k: float(v) for k, v in task.evaluate(targets, outputs).items()})
    metrics["examples"] = int(len(targets))
    if report_dir is not None:
        task.write_reports(report_dir, split, targets, outputs)
    return metrics
