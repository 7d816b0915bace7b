"""One decoding step of Llama's grouped-query attention over keras-hub's cache, without copying it around."""

from __future__ import annotations

from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_hub.src.models.llama import llama_attention
from keras_hub.src.models.llama.llama_attention import LlamaAttention
from kit_plugins.generation.grouped_attention import grouped_query_decoding

KERAS_HUB_CALL = LlamaAttention.call


def layer(heads: int = 6, kv_heads: int = 2, hidden: int = 24, dtype: str | None = None) -> LlamaAttention:
    attention = LlamaAttention(
        num_query_heads=heads, num_key_value_heads=kv_heads, rope_max_wavelength=10000, dtype=dtype
    )
    attention.build((3, 1, hidden))
    return attention


def step_inputs(batch: int, length: int, kv_heads: int = 2, dim: int = 4, hidden: int = 24, seed: int = 0):
    """One token's hidden states, a filled cache `[batch, 2, length, kv heads, dim]` and its padding mask."""
    rng = np.random.default_rng(seed)
    token = tf.constant(rng.normal(size=(batch, 1, hidden)), tf.float32)
    cache = tf.constant(rng.normal(size=(batch, 2, length, kv_heads, dim)), tf.float32)
    mask = rng.random((batch, 1, length)) > 0.3
    mask[..., 0] = True  # every row attends somewhere
    return token, cache, tf.constant(mask)


def open_shapes(hidden: int = 24, kv_heads: int = 2, dim: int = 4) -> list[tf.TensorSpec]:
    """Batch and length open, one token: as kit's Generator traces its decoder."""
    return [
        tf.TensorSpec([None, 1, hidden]),
        tf.TensorSpec([None, 2, None, kv_heads, dim]),
        tf.TensorSpec([None, 1, None], tf.bool),
        tf.TensorSpec([], tf.int32),
    ]


@pytest.mark.parametrize("heads, kv_heads", [(6, 2), (6, 1), (4, 4)])
@pytest.mark.parametrize("batch, length, index", [(1, 2, 1), (3, 9, 5), (8, 40, 39)])
def test_a_decoding_step_gives_keras_hubs_outputs_and_cache(heads, kv_heads, batch, length, index):
    attention = layer(heads, kv_heads)
    dim = 24 // heads
    token, cache, mask = step_inputs(batch, length, kv_heads, dim)
    expected, expected_cache = attention(token, attention_mask=mask, cache=cache, cache_update_index=index)

    def step(token, cache, mask, index):
        return attention(token, attention_mask=mask, cache=cache, cache_update_index=index)

    keras_hubs = (
        tf.function(step).get_concrete_function(*open_shapes(kv_heads=kv_heads, dim=dim)).graph.get_operations()
    )
    with grouped_query_decoding():
        outputs, new_cache = step(token, cache, mask, index)  # eagerly
        graph = tf.function(step).get_concrete_function(*open_shapes(kv_heads=kv_heads, dim=dim))
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new_cache, expected_cache)
    traced_outputs, traced_cache = graph(token, cache, mask, tf.constant(index))  # kept after the block
    np.testing.assert_allclose(traced_outputs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(traced_cache, expected_cache)
    # keras-hub repeats the keys and values for each query head and transposes the copies; kit transposes once.
    operations = graph.graph.get_operations()
    if heads != kv_heads:
        assert any(op.type == "Tile" for op in keras_hubs)
    assert not [op for op in operations if op.type == "Tile"]
    assert len([op for op in operations if op.type == "Transpose" and op.inputs[0].shape.rank >= 4]) == 1
    assert LlamaAttention.call is KERAS_HUB_CALL


def test_a_whole_decoder_generates_the_same_tokens():
    """A two-layer Llama 3 causal LM greedy-decodes the same tokens with keras-hub's call and with kit's."""
    import keras_hub

    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
        intermediate_dim=32,
    )  # fmt: skip
    keras.utils.set_random_seed(0)
    for weight in backbone.weights:
        weight.assign(np.random.default_rng(len(weight.path)).normal(size=weight.shape).astype("float32") * 0.5)
    causal_lm = keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    prompt = {
        "token_ids": np.array([[1, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 2),
        "padding_mask": np.zeros((2, 12), bool),
    }
    prompt["padding_mask"][:, :3] = True
    prompt["padding_mask"][1, 2] = False  # a shorter second prompt
    expected = causal_lm.generate(prompt, stop_token_ids=None)
    causal_lm.generate_function = None  # traced again, inside the block
    with grouped_query_decoding():
        ours = causal_lm.generate(prompt, stop_token_ids=None)
    np.testing.assert_array_equal(ours["token_ids"], expected["token_ids"])


def test_a_subclass_scoring_attention_its_own_way_keeps_it():
    class Scaled(LlamaAttention):
        def _compute_attention(self, query, key, value, attention_mask=None):
            return 2.0 * super()._compute_attention(query, key, value, attention_mask)

    attention = Scaled(num_query_heads=6, num_key_value_heads=2, rope_max_wavelength=10000)
    attention.build((3, 1, 24))
    token, cache, mask = step_inputs(2, 6)
    expected, _ = attention(token, attention_mask=mask, cache=cache, cache_update_index=3)
    with grouped_query_decoding():
        outputs, _ = attention(token, attention_mask=mask, cache=cache, cache_update_index=3)
    np.testing.assert_array_equal(outputs, expected)


@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")  # keras-hub's, one key
@pytest.mark.parametrize("case", ["prompt", "no cache", "no index", "bfloat16", "vLLM serving", "fused attention"])
def test_everything_else_keeps_keras_hubs_call(case, monkeypatch):
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(kwargs)
        return KERAS_HUB_CALL(self, *args, **kwargs)

    attention = layer(dtype="mixed_bfloat16" if case == "bfloat16" else None)
    token, cache, mask = step_inputs(2, 6)
    options = {"attention_mask": mask, "cache": cache, "cache_update_index": 3}
    if case == "prompt":
        token = tf.concat([token, token], axis=1)
        options["attention_mask"] = tf.concat([mask, mask], axis=1)
    if case == "no cache":
        options = {}
    if case == "no index":
        options["cache_update_index"] = None
    if case == "bfloat16":
        cache = tf.cast(cache, tf.bfloat16)
        options["cache"] = cache
    if case == "vLLM serving":  # a context without a paged-attention function: keras-hub's dense route
        context = SimpleNamespace(paged_attention_func=None)
        monkeypatch.setattr(llama_attention, "get_vllm_context", lambda: context, raising=False)
    if case == "fused attention":
        monkeypatch.setattr(llama_attention, "fused_attention_op_available", lambda: True)
    monkeypatch.setattr(LlamaAttention, "call", counted)  # keras-hub's, counted: the block must hand calls to it
    with grouped_query_decoding():
        attention(token, **options)
    assert len(calls) == 1
