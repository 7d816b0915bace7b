"""Validation at each epoch's end that keeps the model's outputs for the final metrics.

Keras validates with `model.evaluate`, which keeps only the metrics. kit's final metrics (F1, AUC, the
confusion matrix...) need the model's outputs, so a run used to pass over the validation split twice after
its last epoch: once in `fit` for `val_loss`, once more for metrics.json (MiniLM on rotten_tomatoes' 1,203
validation reviews: 6.3 s). `EpochValidation` makes the one pass with Keras's own `test_step` computation,
traced as one function per batch as Keras traces it, which also returns the batch's outputs; the final
metrics then use the last epoch's outputs while the weights are still the ones it validated.
"""

from __future__ import annotations

import hashlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kit.evaluation import joined_batches, own_predict_step
from kit.fused_dense import fused_dense_layers
from kit.harness.callbacks import plain_logs


class EpochValidation:
    """The validation split's pass at each epoch end: Keras's `val_` logs, and the outputs after the last epoch.

    `TrainingCallbacks` calls `validate()` where `fit` would have called `model.evaluate`, with
    `on_test_begin`, `on_test_batch_begin/end` and `on_test_end` for the callbacks as `evaluate` calls them.
    `kept_outputs()` hands over the last epoch's (outputs, targets) once, if the weights are still the ones
    that pass saw.
    """

    def __init__(self, model: keras.Model, dataset: tf.data.Dataset):
        self.model, self.dataset = model, dataset
        # One trace for every batch (trimmed batches vary in length), with no static batch size, as Keras's.
        self._step = tf.function(self._test_step, input_signature=[dataset.element_spec], autograph=False)
        self._kept: tuple[str, np.ndarray, np.ndarray] | None = None

    @staticmethod
    def suits(model: keras.Model, task: Any, dataset: tf.data.Dataset) -> bool:
        """Whether kit can validate this model itself, exactly as `model.evaluate` would: Keras's own test and
        predict steps (and the trainer internals `test_step` uses), one replica, no XLA (Keras compiles its
        evaluation with the training step), one target tensor, and a task whose final metrics come from the
        outputs (`Task.evaluate_model` not overridden: a language model's per-token logits are too large to
        keep, so its validation stays `model.evaluate`'s)."""
        from kit.task import Task

        own_test_step = getattr(type(model), "test_step", None) is not getattr(keras.Model, "test_step", None)
        internals = all(hasattr(model, name) for name in ("_compute_loss", "_loss_tracker"))
        one_replica = getattr(model.distribute_strategy, "num_replicas_in_sync", 1) == 1
        one_target = len(dataset.element_spec) > 1 and isinstance(dataset.element_spec[1], tf.TensorSpec)
        own_evaluation = getattr(type(task), "evaluate_model", None) is not Task.evaluate_model
        keras_steps = not own_test_step and not own_predict_step(model) and internals
        xla = getattr(model, "jit_compile", False)
        return keras_steps and one_replica and not xla and one_target and not own_evaluation

    def validate(self, callbacks: Any, keep: bool = True) -> dict[str, Any]:
        """Validate once, as `model.evaluate(return_dict=True)` does; return the `val_` logs. `keep`: keep the
        outputs for the final metrics (after the last epoch only: a task's outputs can be large, and earlier
        epochs' would be held through training)."""
        model = self.model
        self._kept = None
        model.stop_evaluating = False  # a callback may set it to stop early, as in `model.evaluate`
        callbacks.on_test_begin()
        model.reset_metrics()
        outputs, targets, logs = [], [], {}
        with fused_dense_layers():  # as in `fit`: the training step unfused, evaluation fused
            for step, batch in enumerate(self.dataset):
                callbacks.on_test_batch_begin(step)
                y_pred, logs = self._step(batch)
                callbacks.on_test_batch_end(step, logs)
                if keep:
                    outputs.append(tf.nest.map_structure(lambda t: t.numpy(), y_pred))
                    targets.append(batch[1].numpy())
                if model.stop_evaluating:
                    break
        logs = plain_logs(model._get_metrics_result_or_logs(logs))
        callbacks.on_test_end(logs)
        if outputs and not model.stop_evaluating:
            self._kept = (weights_digest(model), *joined_batches(outputs, targets))
        return {f"val_{name}": value for name, value in logs.items()}

    def _test_step(self, data: Any) -> tuple[Any, Any]:
        """Keras's `test_step` (TensorFlow backend), returning the batch's outputs with the logs."""
        return self.model.distribute_strategy.run(self._replica_step, args=(data,))

    def _replica_step(self, data: Any) -> tuple[Any, Any]:
        from keras.src.losses.loss import unscale_loss_for_distribution

        model = self.model
        x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = model(x, training=False)
        loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=weight, training=False)
        batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
        model._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=batch)
        return y_pred, model.compute_metrics(x, y, y_pred, sample_weight=weight)

    def kept_outputs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The last epoch's (outputs, targets), handed over once; None when none were kept or the weights have
        changed since (early stopping put the best epoch's back, a callback changed them)."""
        kept, self._kept = self._kept, None
        if kept is None or kept[0] != weights_digest(self.model):
            return None
        return kept[1], kept[2]


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
