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
from typing import Any

import tensorflow as tf

from kit.patches import SharedPatch

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _float32(value: float) -> float:
    """`value` rounded to float32, as tf.nn.gelu casts its constants (a float32 constant cast to the input's type)."""
    return struct.unpack("f", struct.pack("f", value))[0]


_CUBIC = _float32(0.044715)  # the tanh approximation's coefficient
_INV_SQRT_2 = _float32(0.7071067811865476)  # c in the exact GELU's 0.5 x erfc(-c x), held as tf.nn.gelu holds it
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


@tf.custom_gradient
def gelu_tanh(x: tf.Tensor) -> Any:
    """`tf.nn.gelu(x, approximate=True)`, its backward pass computed from x alone."""

    def gradient(upstream: tf.Tensor) -> tf.Tensor:
        # Not written as the forward is (pow(x, 3)): TensorFlow's optimiser would merge the two and keep
        # the forward's tanh alive until the backward pass, which is what this gradient avoids.
        squared = x * x
        t = tf.tanh(_SQRT_2_OVER_PI * (x + _CUBIC * squared * x))
        slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (_SQRT_2_OVER_PI * (1.0 + 3.0 * _CUBIC * squared))
        return upstream * slope

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


def lean_gelu_gradients() -> contextlib.AbstractContextManager:
    """Within the block, Keras's GELU (TensorFlow backend) takes the gradients above; restored on leaving.

    Functions traced inside (a `model.fit`'s training step) keep them. Blocks may nest or overlap (in
    threads): Keras's own function comes back when the last one ends. With a Keras whose backend module is
    laid out differently, nothing changes.
    """
    return _LEAN_GELU or contextlib.nullcontext()


def _gelu(backend_nn: Any, keras_gelu: Any, x: Any, approximate: bool = True) -> Any:
    """Keras's `gelu(x, approximate)` on the TensorFlow backend, with the lean gradients for floats."""
    x = backend_nn.convert_to_tensor(x)
    if not x.dtype.is_floating:
        return keras_gelu(x, approximate)
    return gelu_tanh(x) if approximate else gelu_erf(x)


def _keras_tensorflow_nn() -> Any:
    """Keras's TensorFlow backend module holding `gelu`, or None where this Keras lays it out differently."""
    try:
        backend_nn = importlib.import_module("keras.src.backend.tensorflow.nn")
    except ImportError:
        return None
    return backend_nn if getattr(backend_nn, "gelu", None) is not None else None


# Keras's backend `gelu` replaced by `_gelu` (which calls it for other dtypes) while a block is open. One object
# for the process, made at import: two made by threads at once would each put back the other's wrapper.
_BACKEND_NN = _keras_tensorflow_nn()
_LEAN_GELU = (
    SharedPatch([(_BACKEND_NN, "gelu")], lambda keras_gelu: [functools.partial(_gelu, _BACKEND_NN, keras_gelu)])
    if _BACKEND_NN is not None
    else None
)
