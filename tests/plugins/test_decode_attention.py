"""One decoding step's attention scored in keras-hub's cache layout: Keras's own values, without the transposes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_hub.layers import CachedMultiHeadAttention
from kit_plugins.generation.decode_attention import single_token_attention

KERAS_ATTENTION = CachedMultiHeadAttention._compute_attention


def layer(heads: int = 3, key_dim: int = 4, dropout: float = 0.1) -> CachedMultiHeadAttention:
    attention = CachedMultiHeadAttention(num_heads=heads, key_dim=key_dim, dropout=dropout)
    size = heads * key_dim
    attention.build((2, 1, size), (2, 5, size))
    return attention


def projected(batch: int, query_length: int, length: int, heads: int = 3, key_dim: int = 4, seed: int = 0):
    """Projected query, key and value (`[batch, length, heads, dim]`) and a mask `[batch, query, length]`."""
    rng = np.random.default_rng(seed)
    query, key, value = (
        tf.constant(rng.normal(size=(batch, n, heads, key_dim)), tf.float32) for n in (query_length, length, length)
    )
    mask = rng.random((batch, query_length, length)) > 0.3
    mask[..., 0] = True  # every row attends somewhere
    return query, key, value, tf.constant(mask)


def operation_types(function, *specs) -> set[str]:
    return {op.type for op in function.get_concrete_function(*specs).graph.get_operations()}


@pytest.mark.parametrize("batch, length", [(1, 2), (2, 7), (8, 54)])
@pytest.mark.parametrize("masked", [True, False])
def test_one_query_token_gives_kerass_values_without_transposing_the_cache(batch, length, masked):
    attention = layer()
    query, key, value, mask = projected(batch, 1, length)
    mask = mask if masked else None
    expected, expected_scores = attention._compute_attention(query, key, value, attention_mask=mask)
    # Traced as kit's Generator traces its decoder: batch and length open, one query token.
    specs = [tf.TensorSpec([None, 1, 3, 4]), tf.TensorSpec([None, None, 3, 4]), tf.TensorSpec([None, None, 3, 4])]
    specs += [tf.TensorSpec([None, 1, None], tf.bool)] if masked else []

    def attend(query, key, value, mask=None):
        return attention._compute_attention(query, key, value, attention_mask=mask, training=False)[0]

    assert "Transpose" in operation_types(tf.function(attend), *specs)  # Keras's einsums transpose the cache
    graph = tf.function(attend, input_signature=specs)
    with single_token_attention():
        outputs, scores = attention._compute_attention(query, key, value, attention_mask=mask)  # eagerly
        traced = graph.get_concrete_function().graph.get_operations()
    assert not [op for op in traced if op.type == "Transpose" and op.inputs[0].shape.rank == 4]  # no cache copies
    assert not [op for op in traced if op.type in ("BatchMatMulV2", "Einsum")]
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    arguments = (query, key, value, mask) if masked else (query, key, value)
    np.testing.assert_allclose(graph(*arguments), expected, rtol=1e-5, atol=1e-6)  # the graph keeps it after the block
    assert CachedMultiHeadAttention._compute_attention is KERAS_ATTENTION
    assert "_compute_attention" not in vars(CachedMultiHeadAttention)  # inherited from Keras's class again


def test_a_decoding_step_through_the_layer_gives_kerass_output_and_cache():
    """The layer's own call, as keras-hub's decoders make it: cache `[batch, 2, length, heads, dim]`, one token,
    GPT-2's attention dropout (0.1), value size unlike key size."""
    attention = CachedMultiHeadAttention(num_heads=2, key_dim=8, value_dim=5, dropout=0.1)
    attention.build((4, 1, 16), (4, 9, 16))
    rng = np.random.default_rng(1)
    token = tf.constant(rng.normal(size=(4, 1, 16)), tf.float32)
    cache = tf.constant(rng.normal(size=(4, 2, 9, 2, 8)), tf.float32)
    value_cache = tf.constant(rng.normal(size=(4, 9, 2, 5)), tf.float32)
    mask = tf.constant(np.arange(9)[None, None, :] <= 5, tf.bool) & tf.ones((4, 1, 9), tf.bool)

    query = attention._query_dense(token)

    def step(query, key_cache, value_cache, mask):
        return attention._compute_attention(query, key_cache, value_cache, attention_mask=mask)[0]

    expected = step(query, cache[:, 0], value_cache, mask)
    with single_token_attention():
        graph = tf.function(step).get_concrete_function(query, cache[:, 0], value_cache, mask)
        outputs = step(query, cache[:, 0], value_cache, mask)
    assert not [op for op in graph.graph.get_operations() if op.type in ("BatchMatMulV2", "Einsum")]
    assert outputs.shape == (4, 1, 2, 5)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(graph(query, cache[:, 0], value_cache, mask), expected, rtol=1e-5, atol=1e-6)
    # And through the layer's call, which writes the step's keys and values into the cache first.
    attention = layer(heads=2, key_dim=8)
    expected, expected_cache = attention(token, token, attention_mask=mask, cache=cache, cache_update_index=5)
    with single_token_attention():
        outputs, new_cache = attention(token, token, attention_mask=mask, cache=cache, cache_update_index=5)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new_cache, expected_cache)


@pytest.mark.parametrize("mask_kind", ["float", "a row masked whole", "one mask for the batch"])
def test_masks_keras_accepts_give_kerass_values(mask_kind):
    """The masked softmax is Keras's own: non-boolean masks and rows with nothing to attend to behave alike."""
    attention = layer()
    query, key, value, mask = projected(3, 1, 6, seed=2)
    if mask_kind == "float":
        mask = tf.cast(mask, tf.float32) * 0.7 + 0.2  # 0.2 where masked, 0.9 where not
    if mask_kind == "a row masked whole":
        mask = tf.concat([tf.zeros_like(mask[:1]), mask[1:]], axis=0)
    if mask_kind == "one mask for the batch":
        mask = mask[:1]
    expected, _ = attention._compute_attention(query, key, value, attention_mask=mask)
    with single_token_attention():
        outputs, _ = attention._compute_attention(query, key, value, attention_mask=mask)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    ["prompt", "scores asked for", "float16", "causal flag", "no dropout", "flash attention", "unknown option"],
)
def test_everything_else_keeps_kerass_computation(case, monkeypatch):
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return KERAS_ATTENTION(*args, **kwargs)

    attention = layer(dropout=0.0 if case == "no dropout" else 0.1)
    query, key, value, mask = projected(2, 3 if case == "prompt" else 1, 6)
    options: dict = {"attention_mask": mask}
    if case == "scores asked for":
        options["return_attention_scores"] = True
    if case == "float16":
        query, key, value = (tf.cast(t, tf.float16) for t in (query, key, value))
    if case == "causal flag":
        options = {"use_causal_mask": True}
    if case == "flash attention":
        monkeypatch.setattr(attention, "_flash_attention", True, raising=False)
        options = {}
    if case == "unknown option":
        options["bogus"] = False
    # Keras's method as the class inherits it, counted: the block must hand these calls to it.
    monkeypatch.setattr(keras.layers.MultiHeadAttention, "_compute_attention", counted)
    with single_token_attention():
        if case == "unknown option":
            with pytest.raises(TypeError):  # refused by Keras, as without the block
                attention._compute_attention(query, key, value, **options)
        else:
            attention._compute_attention(query, key, value, **options)
    assert len(calls) == 1
    assert "_compute_attention" not in vars(CachedMultiHeadAttention)  # inherited again after the block
