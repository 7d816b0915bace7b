"""GELU's lean gradient: the same outputs as TensorFlow's, the same derivative, one tensor kept."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from kit.harness.activations import gelu_erf, gelu_tanh, lean_gelu_gradients

BACKEND_NN = importlib.import_module("keras.src.backend.tensorflow.nn")


def inputs(dtype="float32"):
    """Typical pre-activations plus the tails, where tanh and erf saturate."""
    typical = np.random.default_rng(0).normal(scale=3.0, size=2000)
    tails = [-1e4, -60.0, -20.0, -6.0, -1e-3, 0.0, 1e-3, 6.0, 20.0, 60.0, 1e4]
    return tf.constant(np.concatenate([typical, tails]), dtype=dtype)


def value_and_gradient(function, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    return y, tape.gradient(y, x)


@pytest.mark.parametrize("approximate, lean", [(True, gelu_tanh), (False, gelu_erf)])
def test_same_outputs_and_derivative_as_tensorflow(approximate, lean):
    x = inputs()
    expected_y, expected_grad = value_and_gradient(lambda v: tf.nn.gelu(v, approximate=approximate), x)
    y, grad = value_and_gradient(lean, x)
    np.testing.assert_array_equal(y.numpy(), expected_y.numpy())  # the forward pass is TensorFlow's own
    # Where tanh or erf saturates, 1 - t^2 cancels: float32 rounding moves both gradients by a few 1e-6.
    np.testing.assert_allclose(grad.numpy(), expected_grad.numpy(), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(grad.numpy()))
    _, exact = value_and_gradient(lambda v: tf.nn.gelu(v, approximate=approximate), tf.cast(x, "float64"))
    exact = exact.numpy()
    error = np.max(np.abs(grad.numpy() - exact))
    assert error <= 2 * np.max(np.abs(expected_grad.numpy() - exact)) + 1e-7  # as close as TensorFlow's
    # Relatively too, in the left tail where the derivative is tiny (1 + erf would cancel there).
    tail = (x.numpy() > -12) & (x.numpy() < -2) & (exact != 0)
    relative = np.abs(grad.numpy()[tail] - exact[tail]) / np.abs(exact[tail])
    assert (
        np.max(relative) <= 2 * np.max(np.abs(expected_grad.numpy()[tail] - exact[tail]) / np.abs(exact[tail])) + 1e-6
    )


@pytest.mark.parametrize("approximate, lean", [(True, gelu_tanh), (False, gelu_erf)])
@pytest.mark.parametrize("dtype, tolerance", [("float16", 2e-3), ("bfloat16", 2e-2), ("float64", 1e-12)])
def test_other_float_types(dtype, tolerance, approximate, lean):
    x = tf.constant(np.linspace(-6.0, 6.0, 241), dtype=dtype)
    _, expected = value_and_gradient(lambda v: tf.nn.gelu(v, approximate=approximate), x)
    _, grad = value_and_gradient(lean, x)
    assert grad.dtype == x.dtype
    np.testing.assert_allclose(
        tf.cast(grad, "float64").numpy(), tf.cast(expected, "float64").numpy(), rtol=tolerance, atol=tolerance
    )


def forward_tensors_kept(function) -> set[str]:
    """The forward pass's tensors (other than x) that the traced backward pass of `function` reads."""

    @tf.function(input_signature=[tf.TensorSpec([None, 8], "float32")])
    def step(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            y = function(v)
        return y, tape.gradient(y, v)

    graph = step.get_concrete_function().graph
    y, gradient = graph.outputs

    def ancestors(tensor) -> set:
        found, pending = set(), [tensor.op]
        while pending:
            op = pending.pop()
            if op not in found:
                found.add(op)
                pending.extend(t.op for t in op.inputs)
        return found

    forward = ancestors(y)
    backward = ancestors(gradient) - forward
    # The upstream gradient's Shape reads y's shape only; the placeholder is x.
    return {
        t.name
        for op in backward
        if op.type != "Shape"
        for t in op.inputs
        if t.op in forward and t.op.type != "Placeholder"
    }


@pytest.mark.parametrize("lean", [gelu_tanh, gelu_erf])
def test_keeps_only_the_input_for_the_backward_pass(lean):
    assert forward_tensors_kept(lean) == set()
    # The check can fail: TensorFlow's own gradient reads the forward pass's tanh, x / 2 and 1 + tanh.
    assert len(forward_tensors_kept(lambda v: tf.nn.gelu(v, approximate=True))) >= 3


def gradient_ops(layer, x) -> set[str]:
    """The operation types of the traced gradient of `layer` at `x`."""

    @tf.function
    def gradient(v):
        with tf.GradientTape() as tape:
            y = layer(v)
        return tape.gradient(y, layer.kernel)

    return {op.type for op in gradient.get_concrete_function(x).graph.get_operations()}


def test_keras_gelu_uses_it_inside_the_block_only():
    keras_gelu = BACKEND_NN.gelu
    layer = keras.layers.Dense(4, activation=lambda v: keras.activations.gelu(v, approximate=True))
    x = tf.constant(np.random.default_rng(1).normal(size=(3, 5)), dtype="float32")
    outside = layer(x).numpy()
    assert "TanhGrad" in gradient_ops(layer, x)  # TensorFlow differentiating through tanh
    with lean_gelu_gradients():
        assert BACKEND_NN.gelu is not keras_gelu
        np.testing.assert_array_equal(layer(x).numpy(), outside)
        assert "TanhGrad" not in gradient_ops(layer, x)  # the lean gradient, from x
        with tf.GradientTape() as tape:
            y = layer(x)
        lean = tape.gradient(y, layer.kernel)
    assert BACKEND_NN.gelu is keras_gelu
    with tf.GradientTape() as tape:
        y = layer(x)
    np.testing.assert_allclose(lean.numpy(), tape.gradient(y, layer.kernel).numpy(), rtol=1e-5, atol=1e-7)


def test_restored_when_the_block_fails():
    keras_gelu = BACKEND_NN.gelu
    with pytest.raises(RuntimeError), lean_gelu_gradients():
        raise RuntimeError("training failed")
    assert BACKEND_NN.gelu is keras_gelu


def test_nested_blocks_restore_keras_gelu_when_the_last_ends():
    keras_gelu = BACKEND_NN.gelu
    with lean_gelu_gradients():
        lean = BACKEND_NN.gelu
        with lean_gelu_gradients():
            assert BACKEND_NN.gelu is lean
        assert BACKEND_NN.gelu is lean
    assert BACKEND_NN.gelu is keras_gelu


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_gradient_stays_finite_far_out(dtype):
    """x 2u' grows as x^3: at 1.2e13 it overflows float32, where s (1 - s) is 0 (inf x 0 would be NaN)."""
    x = tf.constant([1.2e13, -1.2e13, 1e18, -1e18, 1e4, -1e4], dtype=dtype)
    _, expected = value_and_gradient(lambda v: tf.nn.gelu(v, approximate=True), x)
    _, grad = value_and_gradient(gelu_tanh, x)
    np.testing.assert_array_equal(tf.cast(grad, "float64").numpy(), [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(tf.cast(grad, "float64").numpy(), tf.cast(expected, "float64").numpy())
