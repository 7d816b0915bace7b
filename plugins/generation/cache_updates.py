"""keras-hub's decoding cache written by TensorFlow's own kernel when a decoder is traced without XLA.

keras-hub's models write each step's keys and values into their cache, and its samplers write each next
token into the sequence, with `keras.ops.slice_update`. Keras's TensorFlow backend spells that as XLA's
`DynamicUpdateSlice`, which outside an XLA-compiled function TensorFlow runs by compiling it on demand and
executing it apart from the rest of the graph. For a small decoder those calls were a fifth of the
operations' time per token (gpt-tiny, batch 8: 0.65 of 3.3 ms, TensorFlow's profiler). Within
`tensorflow_slice_updates()` the calls trace as TensorFlow's `TensorStridedSliceUpdate`, with the start
indices moved as XLA moves them (into the tensor, so that the update fits): the same values in the same
places. `kit generate`'s decoder: gpt-tiny 1.08-1.11x the tokens/s, SmolLM2-135M 1.07x
(`benchmarks/decoder_switches.py --switch cache-writes`).

A function compiled with XLA (`jit_compile=True`) keeps XLA's own operation, even when traced inside the block:
XLA needs the kernel's start and end as constants, and a decoder's step index is not one.

Example:
    >>> with tensorflow_slice_updates():
    ...     tokens = model.generate(inputs)  # its decoding function is traced inside
"""

from __future__ import annotations

from typing import Any, Callable

import keras

from kit.patches import SharedPatch


def tensorflow_slice_updates() -> SharedPatch:
    """Within the block, `keras.ops.slice_update` on TensorFlow tensors traces as `TensorStridedSliceUpdate`.

    Functions traced inside keep it. The switch is `keras.ops`' own attribute, which keras-hub looks up at
    each call (`ops.slice_update`), for the whole process while any block is open; blocks may nest or
    overlap. On another backend nothing changes.
    """
    return _PATCH


def _wrap(keras_slice_update: Callable) -> Callable:
    import tensorflow as tf
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext

    def integer(index: Any) -> bool:
        if isinstance(index, bool):
            return False
        return isinstance(index, int) or (tf.is_tensor(index) and index.dtype.is_integer and index.shape.rank == 0)

    def slice_update(inputs: Any, start_indices: Any, updates: Any) -> Any:
        """`keras.ops.slice_update`: `updates` written into `inputs` from `start_indices` on."""
        rank = inputs.shape.rank if tf.is_tensor(inputs) else None
        plain = (
            rank is not None
            and rank > 0
            and tf.is_tensor(updates)
            and updates.dtype == inputs.dtype
            and updates.shape.rank == rank
            and isinstance(start_indices, (list, tuple))
            and len(start_indices) == rank
            and all(integer(index) for index in start_indices)
            and not GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
        )
        if not plain:  # Keras tensors, NumPy values, indices as one tensor, XLA: Keras's own operation
            return keras_slice_update(inputs, start_indices, updates)
        size = tf.shape(updates, out_type=tf.int32)
        begin = tf.stack([tf.cast(index, tf.int32) for index in start_indices])
        begin = tf.clip_by_value(begin, 0, tf.shape(inputs, out_type=tf.int32) - size)  # as XLA's operation
        strides = tf.ones([rank], tf.int32)
        return tf.raw_ops.TensorStridedSliceUpdate(
            input=inputs, begin=begin, end=begin + size, strides=strides, value=updates
        )

    slice_update.__wrapped__ = keras_slice_update
    return slice_update


# One object for the process, made at import: two made by threads at once would each put back the other's wrapper.
_PATCH = SharedPatch(
    [(keras.ops, "slice_update")], lambda keras_slice_update: [_wrap(keras_slice_update)], backend="tensorflow"
)
