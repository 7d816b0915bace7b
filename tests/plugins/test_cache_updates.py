"""keras-hub's decoding cache written by TensorFlow's own kernel: the values Keras's XLA operation gives."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from kit_plugins.generation.cache_updates import tensorflow_slice_updates

KERAS_SLICE_UPDATE = keras.ops.slice_update


def operation_types(function, *specs) -> set[str]:
    return {op.type for op in function.get_concrete_function(*specs).graph.get_operations()}


def write_at(axis: int, start: tuple[int, ...]):
    """`keras.ops.slice_update` with the start on `axis` given as a tensor (a decoder's step index)."""

    def update(inputs, updates, index):
        starts = list(start)
        starts[axis] = index
        return keras.ops.slice_update(inputs, starts, updates)

    return update


CASES = [
    ((2, 3, 5, 4), (0, 0, 2, 0), 2, (2, 3, 1, 4)),  # one step's keys into a (batch, heads, length, size) cache
    ((2, 3, 5, 4), (0, 0, 0, 0), 2, (2, 3, 5, 4)),  # the whole cache at once (the prompt's pass)
    ((3, 7), (0, 4), 1, (3, 1)),  # the sampler's next token into the sequences
    ((3, 7), (0, 9), 1, (3, 1)),  # past the end: XLA moves the start back until the update fits
    ((3, 7), (0, -2), 1, (3, 1)),  # negative: XLA moves it to 0 (not counted from the end)
    ((4,), (1,), 0, (2,)),
]


@pytest.mark.parametrize("shape, start, axis, update_shape", CASES)
@pytest.mark.parametrize("index_dtype", [tf.int32, tf.int64])
def test_values_are_keras_own_and_the_graph_has_no_xla_operation(shape, start, axis, update_shape, index_dtype):
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=shape), tf.float32)
    updates = tf.constant(rng.normal(size=update_shape), tf.float32)
    index = tf.constant(start[axis], index_dtype)
    expected = KERAS_SLICE_UPDATE(inputs, list(start), updates)
    update = write_at(axis, start)
    # Traced as kit's Generator traces its decoder: any size on every axis.
    specs = [tf.TensorSpec([None] * len(shape)), tf.TensorSpec([None] * len(shape)), tf.TensorSpec([], index_dtype)]
    assert "XlaDynamicUpdateSlice" in operation_types(tf.function(update), *specs)
    graph = tf.function(update, input_signature=specs)
    with tensorflow_slice_updates():
        traced = operation_types(graph, *specs)
        np.testing.assert_array_equal(update(inputs, updates, index), expected)  # eagerly too
    assert "TensorStridedSliceUpdate" in traced and "XlaDynamicUpdateSlice" not in traced
    np.testing.assert_array_equal(graph(inputs, updates, index), expected)  # the traced graph keeps it
    assert keras.ops.slice_update is KERAS_SLICE_UPDATE  # Keras's own is back once the block ends


def test_static_shapes_are_kept():
    update = write_at(1, (0, 0))
    with tensorflow_slice_updates():
        traced = tf.function(update).get_concrete_function(
            tf.TensorSpec([None, 7]), tf.TensorSpec([None, 1]), tf.TensorSpec([], tf.int32)
        )
    assert traced.structured_outputs.shape.as_list() == [None, 7]


def test_a_function_compiled_with_xla_keeps_xlas_operation():
    """XLA needs the kernel's start as a constant; a decoder's step index is not one."""
    inputs, updates = tf.zeros((3, 7)), tf.ones((3, 1))
    update = tf.function(write_at(1, (0, 0)), jit_compile=True)
    with tensorflow_slice_updates():
        compiled = update(inputs, updates, tf.constant(4))
    np.testing.assert_array_equal(compiled, KERAS_SLICE_UPDATE(inputs, [0, 4], updates))


def test_calls_it_does_not_handle_take_keras_own_operation():
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
