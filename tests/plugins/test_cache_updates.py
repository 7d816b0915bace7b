"""keras-hub's decoding cache written by TensorFlow's own kernel: the values Keras's XLA operation gives."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from kit_plugins.generation.cache_updates import tensorflow_slice_updates

KERAS_SLICE_UPDATE = keras.ops.slice_update


def traced_ops(function, *args) -> set[str]:
    return {op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()}


@pytest.mark.parametrize(
    "shape, start, update_shape",
    [
        ((2, 3, 5, 4), (0, 2, 0, 0), (2, 1, 5, 4)),  # one step's keys into a (batch, heads, length, size) cache
        ((2, 3, 5, 4), (0, 0, 0, 0), (2, 3, 5, 4)),  # the whole cache at once (the prompt's pass)
        ((3, 7), (0, 4), (3, 1)),  # the sampler's next token into the sequences
        ((4,), (1,), (2,)),
    ],
)
def test_values_are_kerass_and_the_graph_has_no_xla_operation(shape, start, update_shape):
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=shape), tf.float32)
    updates = tf.constant(rng.normal(size=update_shape), tf.float32)
    index = tf.constant(start[1] if len(start) > 1 else start[0])
    indices = lambda i: [i if n == (1 if len(start) > 1 else 0) else s for n, s in enumerate(start)]  # noqa: E731

    def update(x, u, i):
        return keras.ops.slice_update(x, indices(i), u)

    expected = KERAS_SLICE_UPDATE(inputs, list(start), updates)
    assert "XlaDynamicUpdateSlice" in traced_ops(update, inputs, updates, index)
    with tensorflow_slice_updates():
        ops = traced_ops(update, inputs, updates, index)
        graph = tf.function(update)
        np.testing.assert_array_equal(graph(inputs, updates, index), expected)
        np.testing.assert_array_equal(update(inputs, updates, index), expected)  # eagerly too
    assert "TensorStridedSliceUpdate" in ops and "XlaDynamicUpdateSlice" not in ops
    np.testing.assert_array_equal(graph(inputs, updates, index), expected)  # the traced graph keeps it
    assert keras.ops.slice_update is KERAS_SLICE_UPDATE  # Keras's own is back once the block ends


def test_calls_it_does_not_handle_take_kerass_own_operation():
    inputs, updates = np.zeros((2, 4), "float32"), np.ones((2, 1), "float32")
    with tensorflow_slice_updates():
        numpy_values = keras.ops.slice_update(inputs, [0, 2], updates)  # NumPy in: Keras converts
        symbolic = keras.ops.slice_update(keras.KerasTensor((2, 4)), [0, 2], keras.KerasTensor((2, 1)))
        one_tensor = keras.ops.slice_update(tf.zeros((2, 4), tf.int32), tf.constant([0, 1]), tf.ones((2, 1), tf.int32))
    np.testing.assert_array_equal(numpy_values, KERAS_SLICE_UPDATE(inputs, [0, 2], updates))
    assert isinstance(symbolic, keras.KerasTensor) and symbolic.shape == (2, 4)
    assert np.asarray(one_tensor).tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]


def test_blocks_nest_and_keras_comes_back_after_an_error():
    with pytest.raises(RuntimeError):
        with tensorflow_slice_updates():
            with tensorflow_slice_updates():
                assert keras.ops.slice_update.__wrapped__ is KERAS_SLICE_UPDATE
            assert keras.ops.slice_update is not KERAS_SLICE_UPDATE  # the outer block is still open
            raise RuntimeError("decoding failed")
    assert keras.ops.slice_update is KERAS_SLICE_UPDATE
