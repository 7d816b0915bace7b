"""Document packing: token streams cut into fixed-length next-token windows, no padding."""

from __future__ import annotations

from typing import Any


def pack_documents(dataset: Any, tokenizer: Any, column: str, sequence_length: int) -> Any:
    """Documents -> (inputs, next-token targets) windows of `sequence_length` tokens.

    Each document's tokens are followed by the end-of-text token; the stream
    is cut into windows of `sequence_length + 1` tokens (the last partial one
    is dropped), each giving `sequence_length` predictions.
    """
    import tensorflow as tf

    end = tf.constant([tokenizer.end_token_id], tf.int32)

    def tokens(x: dict[str, Any]) -> Any:
        return tf.concat([tf.cast(tokenizer(x[column]), tf.int32), end], axis=0)

    def split(window: Any) -> Any:
        x = {"token_ids": window[:-1], "padding_mask": tf.ones([sequence_length], tf.bool)}
        return x, window[1:]

    stream = dataset.map(tokens, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    return stream.batch(sequence_length + 1, drop_remainder=True).map(split)
