"""Dense layers traced as fusable 2-D products for inference: the same outputs as Keras's own calls."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from kit.fused_dense import fused_dense_layers

KERAS_DENSE_CALL = keras.layers.Dense.call
KERAS_EINSUM_DENSE_CALL = keras.layers.EinsumDense.call


def graph_ops(function, *args) -> set[str]:
    """The operation types of `function` traced on `args`."""
    return {op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()}


def bias_adds_on_matmul(function, *args) -> int:
    """How many `BiasAdd`s of `function` (traced on `args`) take a 2-D `MatMul`: what grappler fuses."""
    graph = tf.function(function).get_concrete_function(*args).graph
    return sum(op.type == "BiasAdd" and op.inputs[0].op.type == "MatMul" for op in graph.get_operations())


@pytest.fixture
def fused_calls(monkeypatch):
    """The number of layer calls that took kit's row-product path."""
    from kit import fused_dense

    calls = []
    product = fused_dense._rows_product

    def counted(*args, **kwargs):
        calls.append(args[0])
        return product(*args, **kwargs)

    monkeypatch.setattr(fused_dense, "_rows_product", counted)
    return calls


def sequences(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape), dtype="float32")


def layers():
    """A feed-forward Dense with GELU, and attention's projections as Keras's MultiHeadAttention builds them."""
    keras.utils.set_random_seed(3)
    dense = keras.layers.Dense(12, activation=lambda x: keras.activations.gelu(x, approximate=True))
    query = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de")
    output = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, 6), bias_axes="e")
    x = sequences(4, 5, 6)
    dense(x), query(x), output(query(x))
    for layer in (dense, query, output):  # a bias that is not zero
        if layer.bias is not None:
            layer.bias.assign(np.random.default_rng(1).normal(size=layer.bias.shape))
    return dense, query, output, x


def test_dense_and_attention_projections_give_keras_outputs_through_one_matmul_and_bias_add():
    dense, query, output, x = layers()
    expected = [dense(x), query(x), output(query(x))]
    with fused_dense_layers():
        got = [dense(x), query(x), output(query(x))]
        traced = [
            graph_ops(lambda v, layer=layer: layer(v), v)
            for layer, v in ((dense, x), (query, x), (output, expected[1]))
        ]
    for want, have in zip(expected, got):
        assert have.shape == want.shape
        np.testing.assert_allclose(have.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    for ops in traced:
        assert "MatMul" in ops
        assert not ops & {"Einsum", "BatchMatMulV2"}  # no 3-D product
    with fused_dense_layers():
        assert bias_adds_on_matmul(lambda v: output(query(v)) + dense(v)[..., :6], x) == 3
    assert bias_adds_on_matmul(lambda v: output(query(v)) + dense(v)[..., :6], x) == 0  # Keras's own graph


def test_static_shape_is_kept_and_a_dynamic_length_is_fused():
    _, query, _, _ = layers()
    with fused_dense_layers():
        traced = tf.function(lambda v: query(v))
        concrete = traced.get_concrete_function(tf.TensorSpec([None, None, 6], "float32"))
        got = traced(sequences(3, 7, 6))
    assert concrete.structured_outputs.shape.as_list() == [None, None, 2, 3]
    assert "BiasAdd" in {op.type for op in concrete.graph.get_operations()}
    np.testing.assert_allclose(got.numpy(), query(sequences(3, 7, 6)).numpy(), rtol=1e-5, atol=1e-6)


def test_training_calls_keep_kerass_graph(fused_calls):
    dense, query, _, x = layers()
    with fused_dense_layers():
        traced = tf.function(lambda v: [dense(v, training=True), query(v, training=True)])
        traced(x)
        assert not fused_calls
        traced = tf.function(lambda v: [dense(v, training=False), query(v)])
        traced(x)
    assert fused_calls == [dense, query]


@pytest.mark.parametrize("change", ["lora", "int8", "mixed_float16", "two_d", "other_equation"])
def test_layers_it_cannot_fuse_take_kerass_own_call(change, fused_calls):
    keras.utils.set_random_seed(4)
    x = sequences(2, 3, 8)
    if change == "two_d":
        layer, x = keras.layers.Dense(5), sequences(4, 8)
    elif change == "other_equation":
        layer = keras.layers.EinsumDense("abc,dc->abd", output_shape=(None, 5), bias_axes="d")  # kernel transposed
    elif change == "mixed_float16":
        layer, x = keras.layers.Dense(5, dtype="mixed_float16"), tf.cast(x, "float16")
    else:
        layer = keras.layers.Dense(5)
    layer(x)
    if change == "lora":
        layer.enable_lora(2)
        layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape))
    elif change == "int8":
        layer.quantize("int8")
    expected = layer(x)
    with fused_dense_layers():
        got = layer(x)
        tf.function(lambda v: layer(v))(x)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert not fused_calls


def test_a_keras_hub_classifier_predicts_the_same_with_its_layers_fused():
    import keras_hub

    keras.utils.set_random_seed(5)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12
    )
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
    x = {
        "token_ids": np.random.default_rng(0).integers(1, 50, size=(6, 9)),
        "segment_ids": np.zeros((6, 9), "int32"),
        "padding_mask": np.arange(9)[None, :] < np.array([9, 7, 5, 3, 9, 1])[:, None],
    }
    expected = model.predict_on_batch(x)
    fused_model = keras.models.clone_model(model)
    fused_model.set_weights(model.get_weights())
    with fused_dense_layers():
        got = fused_model.predict_on_batch(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with fused_dense_layers():
        graph = tf.function(lambda v: fused_model(v, training=False)).get_concrete_function(x).graph
    fused = [op for op in graph.get_operations() if op.type == "BiasAdd" and op.inputs[0].op.type == "MatMul"]
    assert len(fused) >= 2 * 6  # per layer: query, key, value, attention output and two feed-forward products


def test_kerass_calls_come_back_when_the_last_block_ends_even_across_threads():
    entered, release = threading.Event(), threading.Event()

    def hold():
        with fused_dense_layers():
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    entered.wait(10)
    with fused_dense_layers():
        assert keras.layers.Dense.call is not KERAS_DENSE_CALL
    assert keras.layers.Dense.call is not KERAS_DENSE_CALL  # the other thread's block is still open
    release.set()
    worker.join()
    assert keras.layers.Dense.call is KERAS_DENSE_CALL
    assert keras.layers.EinsumDense.call is KERAS_EINSUM_DENSE_CALL
    with pytest.raises(RuntimeError), fused_dense_layers():
        raise RuntimeError("inside")
    assert keras.layers.Dense.call is KERAS_DENSE_CALL


def test_final_evaluation_traces_the_model_once_for_batches_of_every_length(fused_calls):
    import keras_hub

    from kit.evaluation import outputs_and_targets

    keras.utils.set_random_seed(6)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12
    )
    model = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
    rng = np.random.default_rng(1)
    batches = []
    for length in (3, 7, 5, 9):  # trimmed batches: each as long as its longest text
        x = {
            "token_ids": rng.integers(1, 50, size=(4, length)).astype("int32"),
            "segment_ids": np.zeros((4, length), "int32"),
            "padding_mask": np.ones((4, length), bool),
        }
        batches.append((x, rng.integers(0, 3, size=4).astype("int32")))
    spec = (
        {k: tf.TensorSpec([None, None], v.dtype) for k, v in batches[0][0].items()},
        tf.TensorSpec([None], tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec)
    outputs, targets = outputs_and_targets(model, dataset)
    assert len(fused_calls) == 2 * 6  # one trace: each layer's six dense products once
    expected = np.concatenate([model.predict_on_batch(x) for x, _ in batches])
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(targets, np.concatenate([y for _, y in batches]))


def test_keras_hub_spellings_of_the_same_products_are_fused(fused_calls):
    """keras-hub's Llama writes its projections with other letters: bqm,muh->bquh, bquh,uhm->bqm, bsd,df->bsf."""
    keras.utils.set_random_seed(7)
    x = sequences(2, 4, 6)
    query = keras.layers.EinsumDense("bqm,muh->bquh", output_shape=(None, 2, 3))
    output = keras.layers.EinsumDense("bquh,uhm->bqm", output_shape=(None, 6))
    feed_forward = keras.layers.EinsumDense("bsd,df->bsf", output_shape=(None, 10), activation="silu")
    expected = [query(x), output(query(x)), feed_forward(x)]
    with fused_dense_layers():
        got = [query(x), output(query(x)), feed_forward(x)]
    assert len(fused_calls) == 4
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.layers.EinsumDense(
            "abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de", activation="softmax"
        ),
        lambda: keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de", activation="glu"),
        lambda: keras.layers.Dense(4, activation=lambda t: keras.ops.softmax(t, axis=1)),  # over the length axis
        lambda: keras.layers.Dense(4, activation=keras.layers.PReLU()),  # weights shaped like the output
    ],
    ids=["softmax-over-two-axes", "glu", "users-function", "prelu-layer"],
)
def test_an_activation_that_is_not_element_wise_sees_the_layers_own_output(make, fused_calls):
    keras.utils.set_random_seed(8)
    layer, x = make(), sequences(2, 5, 6)
    expected = layer(x)
    with fused_dense_layers():
        got = tf.function(lambda v: layer(v))(x)
    assert fused_calls  # the product and the bias still fused
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_a_model_with_its_own_predict_step_is_evaluated_through_it():
    from kit.evaluation import outputs_and_targets

    class Probabilities(keras.Model):
        def predict_step(self, data):
            return tf.nn.softmax(super().predict_step(data))

    inputs = keras.Input((3,))
    model = Probabilities(inputs, keras.layers.Dense(4)(inputs))
    x, y = np.random.default_rng(0).normal(size=(10, 3)).astype("float32"), np.arange(10)
    outputs, targets = outputs_and_targets(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(targets, y)


def test_splits_with_the_same_inputs_share_one_traced_model():
    """A run's validation and test splits: one trace between them, each split's own outputs and targets."""
    from kit.evaluation import outputs_and_targets

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    rng = np.random.default_rng(0)
    first, second = (rng.normal(size=(n, 3)).astype("float32") for n in (10, 7))
    traced: dict = {}
    got = [
        outputs_and_targets(model, tf.data.Dataset.from_tensor_slices((x, np.arange(len(x)))).batch(4), traced)
        for x in (first, second)
    ]
    (forward,) = traced.values()
    assert forward.experimental_get_tracing_count() == 1
    for (outputs, targets), x in zip(got, (first, second)):
        np.testing.assert_allclose(outputs, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(targets, np.arange(len(x)))


def test_the_documented_plugin_example_fuses_every_later_call(fused_calls):
    """docs/hooks.md's example: traced once inside the block, for any batch size and length."""
    from tests.docs_examples import run_example

    _, query, output, _ = layers()
    inputs = keras.Input((None, 6), name="x")
    model = keras.Model({"x": inputs}, output(query(keras.layers.Dense(6, activation="relu")(inputs))))
    namespace = {"model": model, "batch": {"x": sequences(4, 5, 6)}, "next_batch": {"x": sequences(2, 9, 6, seed=1)}}
    run_example("## Faster inference graphs", namespace)
    assert len(fused_calls) == 3  # the three layers, traced once
    assert keras.layers.Dense.call is KERAS_DENSE_CALL  # the later call ran outside the block
    np.testing.assert_allclose(namespace["more"], model(namespace["next_batch"]), rtol=1e-5, atol=1e-5)
    assert namespace["forward"].experimental_get_tracing_count() == 1
