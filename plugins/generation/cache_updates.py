"""keras-hub's decoding cache written by TensorFlow's own kernel when a decoder is traced without XLA.

keras-hub's models write each step's keys and values into their cache, and its samplers write each next
token into the sequence, with `keras.ops.slice_update`. Keras's TensorFlow backend spells that as XLA's
`DynamicUpdateSlice`, which outside an XLA-compiled function TensorFlow runs by compiling it on demand and
executing it apart from the rest of the graph. For a small decoder those calls were a fifth of the
operations' time per token (gpt-tiny, batch 8: 0.65 of 3.3 ms, TensorFlow's profiler). Within
`tensorflow_slice_updates()` the calls trace as TensorFlow's `TensorStridedSliceUpdate`: the same values in
the same places, 1.1-1.3x gpt-tiny's tokens/s (`benchmarks/generation_vs_transformers.py`).

One difference: XLA moves a start index that would put the update past the end of the tensor back until it
fits; this kernel refuses such an update with an error instead. keras-hub's decoders write within their cache.

Example:
    >>> with tensorflow_slice_updates():
    ...     tokens = model.generate(inputs)  # its decoding function is traced inside
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import keras

from kit.patches import SharedPatch


@contextlib.contextmanager
def tensorflow_slice_updates() -> Iterator[None]:
    """Within the block, `keras.ops.slice_update` on TensorFlow tensors traces as `TensorStridedSliceUpdate`.

    Functions traced inside keep it. The switch is `keras.ops`' own attribute (what keras-hub calls), for the
    whole process while any block is open; blocks may nest or overlap. On another backend nothing changes.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    with _patched():
        yield


@functools.cache
def _patched() -> SharedPatch:
    return SharedPatch([(keras.ops, "slice_update")], lambda keras_slice_update: [_wrap(keras_slice_update)])


def _wrap(keras_slice_update: Callable) -> Callable:
    import tensorflow as tf

    def slice_update(inputs: Any, start_indices: Any, updates: Any) -> Any:
        """`keras.ops.slice_update`: `updates` written into `inputs` from `start_indices` on."""
        rank = inputs.shape.rank if tf.is_tensor(inputs) else None
        plain = (
            rank is not None
            and tf.is_tensor(updates)
            and updates.dtype == inputs.dtype
            and updates.shape.rank == rank
            and isinstance(start_indices, (list, tuple))
            and len(start_indices) == rank
        )
        if not plain:  # symbolic Keras tensors, NumPy values, indices as one tensor: Keras's own way
            return keras_slice_update(inputs, start_indices, updates)
        begin = tf.stack([tf.cast(index, tf.int32) for index in start_indices])
        return tf.raw_ops.TensorStridedSliceUpdate(
            input=inputs,
            begin=begin,
            end=begin + tf.shape(updates, out_type=tf.int32),
            strides=tf.ones([rank], tf.int32),
            value=updates,
        )

    slice_update.__wrapped__ = keras_slice_update
    return slice_update
