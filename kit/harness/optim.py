"""Optimizers and the warm-up + decay learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kit")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak`, then constant, cosine or linear decay to 0.

    Args:
        peak: the learning rate reached after warm-up.
        total_steps: all training steps (warm-up included).
        warmup_steps: steps of linear warm-up.
        decay: "constant", "cosine" or "linear".

    Example:
        >>> schedule = WarmupDecay(1e-3, total_steps=1000, warmup_steps=100, decay="cosine")
        >>> optimizer = keras.optimizers.AdamW(learning_rate=schedule)
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, decay: str = "cosine"):
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        warmup_rate = self.peak * ops.minimum(step + 1.0, warm) / warm
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            decayed = self.peak * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.decay == "linear":
            decayed = self.peak * (1.0 - progress)
        else:
            decayed = ops.convert_to_tensor(self.peak)
        if self.warmup_steps <= 0:
            return decayed
        return ops.where(step < self.warmup_steps, warmup_rate, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
        }


def make_optimizer(train: Any, total_steps: int) -> keras.optimizers.Optimizer:
    """The optimizer named in `train`, with the schedule and gradient clipping applied."""
    schedule = WarmupDecay(
        train.learning_rate,
        total_steps=total_steps,
        warmup_steps=int(round(train.warmup_fraction * total_steps)),
        decay=train.schedule,
    )
    common = {"learning_rate": schedule, "global_clipnorm": train.clip_norm}
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=0.9, **common)
    if train.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    # epsilon 1e-8 and no decay on biases/norms match the usual Transformer recipe.
    optimizer = keras.optimizers.AdamW(weight_decay=train.weight_decay, epsilon=1e-8, **common)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
