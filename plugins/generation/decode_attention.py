"""One decoding step's attention over keras-hub's cache, computed without copying the cache into a new layout.

keras-hub's `CachedMultiHeadAttention` (GPT-2's, OPT's, Whisper's decoders; kit's `gpt-tiny`) keeps its
keys and values as `[batch, length, heads, dim]`. With attention dropout (GPT-2's default, 0.1) Keras
scores them with two einsums, which TensorFlow runs as batched matrix products over
`[batch, heads, length, dim]`, so every step transposes the whole key cache and the whole value cache of
every layer: gpt-tiny's largest operations per token at batch 8 (four transposes a layer, TensorFlow's
profiler). For the one query token of a decoding step the same products are a multiply and a sum over the
cache as it is laid out. Within `single_token_attention()` the layer computes them so, with Keras's own
masked softmax and dropout: gpt-tiny's `kit generate` decoder 1.14-1.35x the tokens/s, the same tokens
(`python benchmarks/decoder_switches.py --switch attention`). The sums run in another order than the
products', so values agree to float32 rounding (~1e-6), not bit for bit.

Anything else keeps Keras's own computation: prompts (more than one query token), attention scores
asked for, layers without attention dropout (Keras gives them its `dot_product_attention` route, whose
masking differs), flash attention, a causal flag, attention over other axes, and dtypes other than float32
(not measured).

Example:
    >>> with single_token_attention():
    ...     tokens = model.generate(inputs)  # its decoding function is traced inside
"""

from __future__ import annotations

from typing import Any, Callable

from keras_hub.layers import CachedMultiHeadAttention

from kit.patches import SharedPatch


def single_token_attention() -> SharedPatch:
    """Within the block, `CachedMultiHeadAttention` layers called for one query token on TensorFlow score
    the cache in its own layout.

    Eager calls inside the block get it, and functions traced inside keep it. The switch is the class's
    `_compute_attention` (the method Keras documents for overriding), for the whole process while any block
    is open; blocks may nest or overlap. On another backend nothing changes.
    """
    return _PATCH


def _wrap(keras_attention: Callable) -> Callable:
    import tensorflow as tf

    def one_query_token(layer: Any, query: Any, key: Any, value: Any) -> bool:
        """Whether Keras would take its einsum route for these inputs, with one query token."""
        tensors = (query, key, value)
        return (
            all(tf.is_tensor(t) and t.shape.rank == 4 and t.dtype == tf.float32 for t in tensors)
            and query.shape[1] == 1
            and tuple(getattr(layer, "_attention_axes", None) or ()) == (1,)
            and getattr(layer, "_dropout", 0.0) > 0.0  # without dropout Keras calls dot_product_attention
            and hasattr(layer, "_inverse_sqrt_key_dim")
            and not getattr(layer, "_flash_attention", False)
        )

    def compute_attention(
        self: Any,
        query: Any,
        key: Any,
        value: Any,
        attention_mask: Any = None,
        training: Any = None,
        return_attention_scores: bool = False,
        **options: Any,
    ) -> Any:
        """Keras's `MultiHeadAttention._compute_attention`: (outputs `[batch, 1, heads, value dim]`, scores)."""
        unknown = set(options) - {"use_causal_mask"}  # Keras's to refuse
        if (
            return_attention_scores
            or unknown
            or options.get("use_causal_mask")
            or not one_query_token(self, query, key, value)
        ):
            return keras_attention(
                self,
                query,
                key,
                value,
                attention_mask=attention_mask,
                training=training,
                return_attention_scores=return_attention_scores,
                **options,
            )
        query = query * tf.cast(self._inverse_sqrt_key_dim, query.dtype)
        scores = tf.reduce_sum(query * key, axis=-1)  # [batch, length, heads]
        scores = tf.transpose(scores, [0, 2, 1])[:, :, tf.newaxis, :]  # Keras's [batch, heads, 1, length]
        scores = self._masked_softmax(scores, attention_mask)
        weights = self._dropout_layer(scores, training=training)
        weights = tf.transpose(weights[:, :, 0, :], [0, 2, 1])[..., tf.newaxis]  # [batch, length, heads, 1]
        return tf.reduce_sum(weights * value, axis=1, keepdims=True), scores

    compute_attention.__wrapped__ = keras_attention
    return compute_attention


# One object for the process, made at import: two made by threads at once would each put back the other's wrapper.
_PATCH = SharedPatch(
    [(CachedMultiHeadAttention, "_compute_attention")],
    lambda keras_attention: [_wrap(keras_attention)],
    backend="tensorflow",
)
