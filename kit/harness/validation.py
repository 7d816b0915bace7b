"""Validation at each epoch's end through kit's evaluation forward, its outputs kept for the final metrics.

Keras validates with `model.evaluate`, which keeps only the metrics. kit's final metrics (F1, AUC, the
confusion matrix...) need the model's outputs, so a run used to pass over the validation split twice after
its last epoch: once in `fit` for `val_loss`, once more for metrics.json (MiniLM on rotten_tomatoes' 1,203
validation reviews: 7.4 s, a quarter of the run's time outside training). `EpochValidation` makes the one
pass: the same forward as the final metrics (traced once, shared with the test split), and Keras's own
`compute_loss` and `compute_metrics` over each batch's outputs for the `val_` logs, as `test_step` does.
The final metrics then use the last epoch's outputs when the weights are still the ones it validated.
"""

from __future__ import annotations

import hashlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kit.evaluation import own_predict_step, traced_forward
from kit.fused_dense import fused_dense_layers
from kit.harness.callbacks import plain_logs


class EpochValidation:
    """The validation split's pass at each epoch end: Keras's `val_` logs, with the outputs kept.

    `TrainingCallbacks` calls `logs()` at every epoch end, with `on_test_begin`, `on_test_batch_begin/end`
    and `on_test_end` for the callbacks as `model.evaluate` calls them. `outputs_for(model)` gives the last
    pass's (outputs, targets) while the model's weights are the ones that pass saw, else None.
    """

    def __init__(self, model: keras.Model, dataset: tf.data.Dataset, traced: dict):
        self.model, self.dataset, self.traced = model, dataset, traced
        self._update = tf.function(self._update_metrics, autograph=False, reduce_retracing=True)
        self._last: tuple[str, np.ndarray, np.ndarray] | None = None

    @staticmethod
    def suits(model: keras.Model, task: Any) -> bool:
        """Whether kit can validate this model itself: one replica, no XLA (Keras compiles its evaluation with
        the training step; kit's forward is not compiled), Keras's own test and predict steps, and a task whose
        final metrics come from the outputs (`Task.evaluate_model` not overridden: a language model's per-token
        logits are too large to keep, so its validation stays `model.evaluate`'s)."""
        from kit.task import Task

        one_replica = getattr(model.distribute_strategy, "num_replicas_in_sync", 1) == 1
        own_test_step = getattr(type(model), "test_step", None) is not getattr(keras.Model, "test_step", None)
        own_evaluation = getattr(type(task), "evaluate_model", None) is not Task.evaluate_model
        plain_steps = not own_test_step and not own_predict_step(model)
        return one_replica and not getattr(model, "jit_compile", False) and plain_steps and not own_evaluation

    def logs(self, callbacks: Any, keep: bool = True) -> dict[str, float]:
        """Validate once; return the `val_` logs. `keep`: keep the outputs for the final metrics (after the last
        epoch only: a task's outputs can be large, and earlier epochs' would be held through training)."""
        model = self.model
        self._last = None
        model.reset_metrics()
        model.stop_evaluating = False  # a callback may set it to stop early, as in `model.evaluate`
        callbacks.on_test_begin()
        outputs, targets, step_logs = [], [], {}
        with fused_dense_layers():
            forward = traced_forward(model, self.dataset.element_spec[0], self.traced)
            for step, batch in enumerate(self.dataset):
                callbacks.on_test_batch_begin(step)
                x, y, weight = keras.utils.unpack_x_y_sample_weight(batch)
                y_pred = forward(x)
                step_logs = self._update(x, y, y_pred, weight)
                callbacks.on_test_batch_end(step, step_logs)
                if keep:
                    outputs.append(tf.nest.map_structure(lambda t: t.numpy(), y_pred))
                    targets.append(y.numpy())
                if model.stop_evaluating:
                    break
        logs = plain_logs(model.get_metrics_result())  # as `model.evaluate` returns them
        callbacks.on_test_end(logs)
        if outputs and not model.stop_evaluating:
            joined = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *outputs)
            self._last = (weights_digest(model), np.asarray(joined), np.concatenate(targets))
        return {f"val_{name}": value for name, value in logs.items()}

    def _update_metrics(self, x: Any, y: Any, y_pred: Any, weight: Any) -> Any:
        """Keras's `test_step` after its forward: the loss into the loss tracker, then the compiled metrics."""
        model = self.model
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=weight, training=False)
        batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
        model._loss_tracker.update_state(loss, sample_weight=batch)
        return model.compute_metrics(x, y, y_pred, sample_weight=weight)

    def outputs_for(self, model: keras.Model) -> tuple[np.ndarray, np.ndarray] | None:
        """The last pass's (outputs, targets), or None when there was none or the weights have changed since
        (early stopping put the best epoch's back, a callback changed them)."""
        if self._last is None or self._last[0] != weights_digest(model):
            return None
        return self._last[1], self._last[2]


HASHED_AT_ONCE = 1 << 22  # bytes: a copy of a whole weight (MiniLM's 47 MB embedding table) would add to the peak


def weights_digest(model: keras.Model) -> str:
    """A digest of every weight's bytes, read a few MB at a time: equal digests, the same weights (MiniLM's
    90 MB: about 0.15 s, 4 MB more resident at most)."""
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        tensor = tf.convert_to_tensor(weight.value)
        if tensor.shape.rank == 0 or tensor.shape[0] == 0:
            digest.update(tensor.numpy().tobytes())
            continue
        row_bytes = tensor.dtype.size * (tensor.shape.num_elements() // tensor.shape[0])
        rows = max(1, HASHED_AT_ONCE // max(1, row_bytes))
        for start in range(0, tensor.shape[0], rows):
            digest.update(np.ascontiguousarray(tensor[start : start + rows].numpy()).data)
    return digest.hexdigest()
