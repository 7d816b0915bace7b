"""Optimizers and the warm-up + decay learning-rate schedule."""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import keras
import tensorflow as tf
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


def make_optimizer(
    train: Any, total_steps: int, backbone_variables: Sequence[Any] = (), backbone_scale: float = 1.0
) -> keras.optimizers.Optimizer:
    """The optimizer named in `train`, with the schedule and gradient clipping applied.

    With `backbone_variables`, those weights learn at `backbone_scale` times the
    scheduled rate (see `backbone_rate`); the scale can change during training.
    """
    schedule = WarmupDecay(
        train.learning_rate,
        total_steps=total_steps,
        warmup_steps=int(round(train.warmup_fraction * total_steps)),
        decay=train.schedule,
    )
    common: dict[str, Any] = {"learning_rate": schedule, "global_clipnorm": train.clip_norm}
    classes = {"sgd": keras.optimizers.SGD, "adam": FusedAdam, "adamw": FusedAdamW}
    cls = classes[train.optimizer]
    if backbone_variables:
        cls = backbone_rate(cls)
        common.update(backbone_variables=backbone_variables, backbone_scale=backbone_scale)
    if train.optimizer == "sgd":
        return cls(momentum=0.9, **common)
    if train.optimizer == "adam":
        return cls(**common)
    # epsilon 1e-8 and no decay on biases/norms match the usual Transformer recipe.
    optimizer = cls(weight_decay=train.weight_decay, epsilon=1e-8, **common)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


class _FusedAdamUpdate:
    """Adam's update of one weight as TensorFlow's fused kernel (`ResourceApplyAdam`) instead of Keras's ops.

    Keras's `Adam.update_step` is six element-wise operations, each a pass over
    the weight's memory with a temporary as large as the weight; for MiniLM's
    103 weights (22.7M values) that was 82 ms of a 415 ms training step on two
    CPU cores, against 36 ms fused (`benchmarks/optimizer.py`). The kernel
    computes the same formula: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) as the
    step size, the moments updated in place, and epsilon added to sqrt(v).

    One difference, on embeddings: their gradient comes sparse (one row per
    token occurrence), and Keras squares those rows one occurrence at a time,
    so a token seen twice in a batch adds g1^2 + g2^2 to the second moment.
    The kernel takes the summed gradient, (g1 + g2)^2: Adam as written, and as
    PyTorch computes it. AMSGrad, and backends other than TensorFlow, keep
    Keras's own update.

    The passes around the kernel are cut the same way: a sparse gradient is
    summed into a dense one once, before clipping (Keras scattered it into a
    new dense tensor for the norm and again for the scaling, and its norm
    summed g1^2 + g2^2 where the dense gradient's has (g1 + g2)^2, as
    PyTorch's `clip_grad_norm_`); the global norm reads each gradient once
    (`tf.nn.l2_loss`, no squared copy); and decoupled weight decay is one
    multiplication and an in-place subtraction (Keras: two multiplications).
    Keras's per-weight `clipnorm` and `clipvalue` then act on the summed
    gradient too, as PyTorch's clipping does.
    """

    def _fused(self) -> bool:
        return not self.amsgrad and keras.backend.backend() == "tensorflow"

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> Any:
        if self._fused():
            grads = [g if g is None else tf.convert_to_tensor(g) for g in grads]
        return super().apply(grads, trainable_variables)

    def _clip_gradients(self, grads: Sequence[Any]) -> Any:
        if not (self._fused() and self.global_clipnorm and self.global_clipnorm > 0):
            return super()._clip_gradients(grads)
        halves = [tf.nn.l2_loss(tf.cast(g, "float32")) for g in grads if g is not None]  # sum(g^2) / 2 each
        norm = tf.sqrt(2.0 * tf.add_n(halves))
        # Keras's formula: a no-op for a finite norm under the limit, NaN for an infinite or NaN norm.
        scale = self.global_clipnorm * tf.minimum(1.0 / norm, 1.0 / self.global_clipnorm) + (norm - norm)
        return [g if g is None else g * tf.cast(scale, g.dtype) for g in grads]

    def _apply_weight_decay(self, variables: Sequence[Any]) -> None:
        if not (self._fused() and self.weight_decay):
            return super()._apply_weight_decay(variables)
        rate = tf.cast(self.learning_rate, "float32") * tf.cast(self.weight_decay, "float32")

        def decay(distribution: Any, variables: Sequence[Any]) -> None:
            direct = _one_device()
            for variable in variables:
                if self._use_weight_decay(variable):
                    value = variable.value if isinstance(variable, keras.Variable) else variable
                    if direct:
                        shrink(value, rate)
                    else:
                        distribution.extended.update(value, shrink, args=(rate,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(decay, self._distribution_strategy, variables)

    def _backend_update_step(self, grads: Sequence[Any], trainable_variables: Sequence[Any], learning_rate: Any) -> Any:
        if not (self._fused() and _one_device()):
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        # One device and no strategy: each weight's `update_step` is called directly. Keras sends every weight
        # through the strategy's merge_call and update(), which for the default strategy only call
        # `update_step`: tracing that machinery for MiniLM's 103 weights was 0.1-0.4 s of the first step.
        # The step's scalars (beta powers and constants) are made once for all weights rather than once per
        # weight: for MiniLM's 103 weights that was about 1,100 of the training step's 6,000 traced operations.
        self._shared_scalars = _StepScalars(self)
        try:
            for gradient, variable in zip(grads, trainable_variables):
                self.update_step(
                    gradient, variable.value if isinstance(variable, keras.Variable) else variable, learning_rate
                )
        finally:
            self._shared_scalars = None

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        if not self._fused():
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        shared = getattr(self, "_shared_scalars", None)
        scalars = shared.of(dtype) if shared is not None else _StepScalars(self).of(dtype)
        gradient = tf.cast(tf.convert_to_tensor(gradient), dtype)  # a sparse embedding gradient summed, dense
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            lr=tf.cast(learning_rate, dtype),
            grad=gradient,
            **scalars,
        )


class _StepScalars:
    """The scalars of one Adam step that every weight of a dtype shares: beta_1^t, beta_2^t (t = the step about
    to be taken), beta_1, beta_2 and epsilon, each made once per dtype."""

    def __init__(self, optimizer: Any):
        self.optimizer = optimizer
        self._made: dict[Any, dict[str, Any]] = {}

    def of(self, dtype: Any) -> dict[str, Any]:
        if dtype not in self._made:
            optimizer = self.optimizer
            step = tf.cast(optimizer.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
            self._made[dtype] = {
                "beta1_power": tf.pow(beta_1, step),
                "beta2_power": tf.pow(beta_2, step),
                "beta1": beta_1,
                "beta2": beta_2,
                "epsilon": tf.cast(optimizer.epsilon, dtype),
            }
        return self._made[dtype]


def _one_device() -> bool:
    """No `tf.distribute` strategy other than the default one (one device) is in use."""
    return not tf.distribute.has_strategy()


def shrink(variable: Any, rate: Any) -> None:
    """`variable` -= `rate` * `variable`: decoupled weight decay, one multiplication and an in-place subtraction.

    Not `variable * (1 - rate)`: float32 holds 1 - rate only to 6e-8, and fine-tuning's rate (lr 5e-5 times
    decay 0.01) is 5e-7, so the decay applied would be off by up to 6% every step, always the same way.
    """
    variable.assign_sub(variable * tf.cast(rate, variable.dtype))


def _handle(variable: Any) -> Any:
    """The resource handle of a Keras or TensorFlow variable (inside a strategy's update: this device's copy)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="kit")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` updating each weight with one fused TensorFlow kernel (see `_FusedAdamUpdate`)."""


@keras.saving.register_keras_serializable(package="kit")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` updating each weight with one fused TensorFlow kernel (see `_FusedAdamUpdate`)."""


@functools.cache
def backbone_rate(base: type) -> type:
    """`base` (a Keras optimizer class) with a second learning rate for a group of weights.

    Keras 3 optimizers have one learning rate for all weights. Fine-tuning wants
    the pretrained backbone to move more slowly than the new head, or not at all
    for the first epochs. The returned class multiplies the scheduled rate (and
    the decoupled weight decay) of `backbone_variables` by `backbone_scale`, a
    variable that callbacks may change between steps: 0 freezes the backbone
    while its optimizer slots exist, so unfreezing needs no recompilation.

    Example:
        >>> cls = backbone_rate(keras.optimizers.AdamW)
        >>> optimizer = cls(learning_rate=1e-3, backbone_variables=backbone.trainable_weights, backbone_scale=0.05)
    """

    class BackboneRate(base):
        def __init__(self, *args: Any, backbone_variables: Sequence[Any] = (), backbone_scale: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self._backbone_keys = {self._var_key(v) for v in backbone_variables}
            self._decayed_backbone_keys: set[Any] = set()
            # A plain tf.Variable: set from callbacks, not part of the optimizer's saved state.
            self.backbone_scale = tf.Variable(float(backbone_scale), trainable=False, name="backbone_scale")

        def build(self, variables: Sequence[Any]) -> None:
            super().build(variables)
            if not self.weight_decay:
                return
            decays = super()._use_weight_decay  # the base's rule (exclusions included)
            self._decayed_backbone_keys = {
                self._var_key(v) for v in variables if self._var_key(v) in self._backbone_keys and decays(v)
            }

        def _use_weight_decay(self, variable: Any) -> bool:
            # Backbone weights decay in update_step, at their own rate.
            return self._var_key(variable) not in self._backbone_keys and super()._use_weight_decay(variable)

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
            key = self._var_key(variable)
            if key in self._backbone_keys:
                learning_rate = learning_rate * ops.cast(self.backbone_scale, "float32")
                if key in self._decayed_backbone_keys:
                    shrink(variable, self.weight_decay * learning_rate)
            return super().update_step(gradient, variable, learning_rate)

    BackboneRate.__name__ = BackboneRate.__qualname__ = f"BackboneRate{base.__name__}"
    return BackboneRate
