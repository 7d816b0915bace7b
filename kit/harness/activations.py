"""GELU with a gradient that keeps one tensor for the backward pass instead of four.

TensorFlow differentiates `tf.nn.gelu` (what Keras's `gelu` and keras-hub's `gelu_approximate` run) one
operation at a time, so a training step keeps the intermediate results of each of them for the backward
pass: x, tanh(...), x / 2 and 1 + tanh(...), each as large as a feed-forward layer's widest activation
(batch x length x 4 x hidden). The derivative needs only x. `lean_gelu_gradients` gives GELU a custom
gradient that keeps x and computes the derivative from it, as TensorFlow's own `tf.nn.silu` does; on
MiniLM (6 layers, batch 32, texts up to 64 tokens) the peak of a training run drops by 200 MB, at the
same speed (`benchmarks/memory_stages.py`).

The forward pass is untouched (the same `tf.nn.gelu`), so outputs, saved models and predictions are the
same; gradients are the same formula, computed in another order (float rounding apart).

Example:
    >>> with lean_gelu_gradients():
    ...     model.fit(dataset, epochs=1)  # the step is traced, and its gradient built, inside
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import struct
import threading
from typing import Any, Iterator

import tensorflow as tf

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _float32(value: float) -> float:
    """`value` rounded to float32, as tf.nn.gelu casts its constants (a float32 constant cast to the input's type)."""
    return struct.unpack("f", struct.pack("f", value))[0]


_CUBIC = _float32(0.044715)  # the tanh approximation's coefficient
_INV_SQRT_2 = _float32(0.7071067811865476)  # c in the exact GELU's 0.5 x erfc(-c x), held as tf.nn.gelu holds it
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_TWO_U = 2.0 * _SQRT_2_OVER_PI  # 2u = x (_TWO_U + _TWO_U_CUBIC x^2)
_TWO_U_CUBIC = 2.0 * _SQRT_2_OVER_PI * _CUBIC


@tf.custom_gradient
def gelu_tanh(x: tf.Tensor) -> Any:
    """`tf.nn.gelu(x, approximate=True)`, its backward pass computed from x alone."""

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        # GELU is x s with s = 0.5 (1 + tanh(u)) = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), so its
        # derivative is s + x s (1 - s) 2u'. Written with sigmoid and SigmoidGrad (dy s (1 - s) in one
        # kernel): 13 element-wise passes instead of 18 for the tanh form (20% faster), and more accurate
        # where tanh saturates (1 + tanh(u) cancels). Not written as the forward is (pow(x, 3)):
        # TensorFlow's optimiser would merge the two and keep the forward's tanh alive until the backward
        # pass, which is what this gradient avoids.
        # Half types are computed in float32: near 1, a float16 sigmoid has too few bits left for 1 - s.
        v, up = (x, upstream) if x.dtype.size > 2 else (tf.cast(x, "float32"), tf.cast(upstream, "float32"))
        squared = tf.square(v)
        s = tf.sigmoid(v * (_TWO_U + _TWO_U_CUBIC * squared))
        # Beyond |x| = 1e4, s (1 - s) is 0 in every float type, and x 2u' (growing as x^3) would overflow to
        # inf, and inf x 0 is NaN: the clipped x gives the same 0.
        near = tf.clip_by_value(v, -1e4, 1e4)
        inner_slope = _TWO_U + 3.0 * _TWO_U_CUBIC * tf.square(near)  # d(2u)/dx
        return tf.cast(up * s + tf.raw_ops.SigmoidGrad(y=s, dy=up * near * inner_slope), x.dtype)

    return tf.nn.gelu(x, approximate=True), gradient


@tf.custom_gradient
def gelu_erf(x: tf.Tensor) -> Any:
    """`tf.nn.gelu(x, approximate=False)`, its backward pass computed from x alone."""

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        # erfc(-c x), as the forward pass: 1 + erf(c x) cancels for x below -4.
        scaled = x * _INV_SQRT_2
        slope = 0.5 * tf.math.erfc(-scaled) + scaled * tf.exp(-scaled * scaled) * _INV_SQRT_PI
        return upstream * slope

    return tf.nn.gelu(x, approximate=False), gradient


_installed: dict[str, Any] = {}  # Keras's own gelu while ours is in place, and how many blocks use it
_lock = threading.Lock()


@contextlib.contextmanager
def lean_gelu_gradients() -> Iterator[None]:
    """Within the block, Keras's GELU (TensorFlow backend) takes the gradients above; restored on leaving.

    Functions traced inside (a `model.fit`'s training step) keep them. Blocks may nest or overlap (in
    threads): Keras's own function comes back when the last one ends. With a Keras whose backend module is
    laid out differently, nothing changes.
    """
    try:
        backend_nn = importlib.import_module("keras.src.backend.tensorflow.nn")
    except ImportError:
        backend_nn = None
    if getattr(backend_nn, "gelu", None) is None:
        yield
        return
    with _lock:
        if not _installed:
            _installed.update(keras_gelu=backend_nn.gelu, users=0)
            backend_nn.gelu = functools.partial(_gelu, backend_nn, backend_nn.gelu)
        _installed["users"] += 1
    try:
        yield
    finally:
        with _lock:
            _installed["users"] -= 1
            if not _installed["users"]:
                backend_nn.gelu = _installed.pop("keras_gelu")
                _installed.clear()


def _gelu(backend_nn: Any, keras_gelu: Any, x: Any, approximate: bool = True) -> Any:
    """Keras's `gelu(x, approximate)` on the TensorFlow backend, with the lean gradients for floats."""
    x = backend_nn.convert_to_tensor(x)
    if not x.dtype.is_floating:
        return keras_gelu(x, approximate)
    return gelu_tanh(x) if approximate else gelu_erf(x)
