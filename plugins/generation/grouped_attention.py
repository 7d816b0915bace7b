"""One decoding step of Llama's grouped-query attention without copying the cache into new layouts.

keras-hub's `LlamaAttention` (Llama 2 and 3, SmolLM2, the Llama folders kit converts from GGUF) keeps its
cache as `[batch, 2, length, key/value heads, dim]`. At every decoding step each layer slices the keys
and the values out of it, writes the step's into each, stacks the two back, repeats them for every query
head of a group (SmolLM2: 3 key/value heads for 9 query heads, so three times the cache) and lets two
einsums transpose the repeated copies for TensorFlow's batched products: about ten copies of its cache
per layer and token, a quarter of SmolLM2's operation time at batch 8 (TensorFlow's profiler).

Within `grouped_query_decoding()` a decoding step (one new token, a cache and its index) instead writes
the step's keys and values into the cache with one update, transposes it once, and scores each group of
query heads against its own key/value head with batched products, using the layer's own projections,
rotary embedding, masked softmax and dropout. The products are the same sums over the same values, as
products of other shapes, so outputs agree to float32 rounding (~1e-6), not bit for bit; the cache is
the same to the bit.

Anything else keeps keras-hub's own call: prompts (more than one token), no cache, TPU serving (vLLM),
fused attention where the backend has it, dtypes other than float32 (not measured), and subclasses that
compute attention their own way (`_compute_attention`).

Example:
    >>> with grouped_query_decoding():
    ...     tokens = model.generate(inputs)  # its decoding function is traced inside
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable

from kit.patches import SharedPatch


def grouped_query_decoding() -> contextlib.AbstractContextManager:
    """Within the block, `LlamaAttention` layers called for one new token on TensorFlow attend over their
    cache as laid out, each group of query heads against its own key/value head.

    Eager calls inside the block get it, and functions traced inside keep it. The switch is the class's
    `call`, for the whole process while any block is open; blocks may nest or overlap. On another backend,
    or a keras-hub that keeps the layer elsewhere, nothing changes.
    """
    return _PATCH or contextlib.nullcontext()


def _llama_attention() -> Any:
    """keras-hub's module holding `LlamaAttention` (not exported as a public layer), or None if it moved."""
    try:
        module = importlib.import_module("keras_hub.src.models.llama.llama_attention")
    except ImportError:
        return None
    return module if isinstance(getattr(module, "LlamaAttention", None), type) else None


def _decoding_step(layer: Any, hidden_states: Any, cache: Any, cache_update_index: Any) -> bool:
    """Whether this call is one decoding step that `_wrap`'s path computes as keras-hub would."""
    import tensorflow as tf

    vllm = getattr(_MODULE, "get_vllm_context", lambda: None)()
    fused = getattr(_MODULE, "fused_attention_op_available", lambda: False)()
    return (
        # A subclass scoring attention its own way keeps its own computation (none in keras-hub 0.32).
        type(layer)._compute_attention is _MODULE.LlamaAttention._compute_attention
        and cache is not None
        and cache_update_index is not None
        and tf.is_tensor(hidden_states)
        and hidden_states.shape.rank == 3
        and hidden_states.shape[1] == 1
        and tf.is_tensor(cache)
        and cache.shape.rank == 5
        and hidden_states.dtype == tf.float32
        and cache.dtype == tf.float32
        and layer.compute_dtype == "float32"
        and vllm is None
        and not fused
    )


def _wrap(keras_hub_call: Callable) -> Callable:
    import keras
    import tensorflow as tf

    def call(
        self: Any,
        hidden_states: Any,
        attention_mask: Any = None,
        cache: Any = None,
        cache_update_index: Any = None,
        training: Any = None,
    ) -> Any:
        """keras-hub's `LlamaAttention.call`: (outputs `[batch, 1, hidden]`, the updated cache) for one token."""
        if not _decoding_step(self, hidden_states, cache, cache_update_index):
            return keras_hub_call(
                self,
                hidden_states,
                attention_mask=attention_mask,
                cache=cache,
                cache_update_index=cache_update_index,
                training=training,
            )
        rope = self.rotary_embedding_layer
        query = rope(self._query_dense(hidden_states), start_index=cache_update_index)  # [batch, 1, heads, dim]
        key = rope(self._key_dense(hidden_states), start_index=cache_update_index)  # [batch, 1, kv heads, dim]
        value = self._value_dense(hidden_states)
        step = tf.stack([key, value], axis=1)  # [batch, 2, 1, kv heads, dim]: the cache's layout
        cache = keras.ops.slice_update(cache, [0, 0, cache_update_index, 0, 0], step)

        batch, groups, kv_heads = tf.shape(query)[0], self.num_key_value_groups, self.num_key_value_heads
        dim = query.shape[-1] or tf.shape(query)[-1]
        # [2, batch, kv heads, length, dim]: keys and values as TensorFlow's products take them, one copy.
        # Taking [0] and [1] of its first axis shares the buffer (an aligned slice), no copy.
        laid_out = tf.transpose(cache, [1, 0, 3, 2, 4])
        keys, values = laid_out[0], laid_out[1]
        # Query head h = kv head h // groups, as keras-hub's `repeat` of the keys and values pairs them.
        grouped = tf.reshape(query, [batch, kv_heads, groups, dim])
        scores = tf.matmul(grouped, keys, transpose_b=True)  # [batch, kv heads, groups, length]
        scores = scores * tf.cast(self._inv_norm_factor, scores.dtype)
        scores = tf.reshape(scores, [batch, kv_heads * groups, 1, -1])  # keras-hub's [batch, heads, 1, length]
        weights = tf.cast(self._masked_softmax(scores, attention_mask), self.compute_dtype)
        outputs = tf.matmul(tf.reshape(weights, [batch, kv_heads, groups, -1]), values)  # [.., groups, dim]
        outputs = tf.reshape(outputs, [batch, 1, kv_heads * groups, dim])  # [batch, 1, heads, dim]
        outputs = self._dropout_layer(outputs, training=training)
        return self._output_dense(outputs), cache

    call.__wrapped__ = keras_hub_call
    return call


# One object for the process, made at import: two made by threads at once would each put back the other's wrapper.
_MODULE = _llama_attention()
_PATCH = (
    SharedPatch(
        [(_MODULE.LlamaAttention, "call")], lambda keras_hub_call: [_wrap(keras_hub_call)], backend="tensorflow"
    )
    if _MODULE is not None
    else None
)
