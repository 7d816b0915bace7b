"""Document packing: token streams cut into fixed-length next-token windows, no padding."""

from __future__ import annotations

import weakref
from typing import Any

# One traced graph per tokenizer, shared by every split's dataset (see `document_tokens`).
_DOCUMENT_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pack_documents(dataset: Any, tokenizer: Any, column: str, sequence_length: int) -> Any:
    """Documents -> (inputs, next-token targets) windows of `sequence_length` tokens.

    Each document's tokens are followed by the end-of-text token; the stream
    is cut into windows of `sequence_length + 1` tokens (the last partial one
    is dropped), each giving `sequence_length` predictions.
    """
    import tensorflow as tf

    tokens = document_tokens(tokenizer)

    @tf.autograph.experimental.do_not_convert  # plain graph code: no AutoGraph rewrite of its source
    def split(window: Any) -> Any:
        x = {"token_ids": window[:-1], "padding_mask": tf.ones([sequence_length], tf.bool)}
        return x, window[1:]

    of_document = tf.autograph.experimental.do_not_convert(lambda x: tokens(x[column]))
    stream = dataset.map(of_document, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return stream.unbatch().batch(sequence_length + 1, drop_remainder=True).map(split)


def document_tokens(tokenizer: Any) -> Any:
    """One document's token ids, then the end-of-text token, as a `tf.function` traced once per tokenizer.

    tf.data traces the function of each `map` anew, and a byte-pair tokenizer's graph takes about a second to
    trace (gpt-tiny's), which the train, validation and test splits each paid; they share this one instead.
    """
    import tensorflow as tf

    if tokenizer not in _DOCUMENT_TOKENS:
        end = tf.constant([tokenizer.end_token_id], tf.int32)
        tokenizer_ref = weakref.ref(tokenizer)  # a strong one would keep the key, and its entry, alive for good

        @tf.function(autograph=False)  # a tokenizer call and a concat: no AutoGraph needed
        def tokens(text: Any) -> Any:  # traced while the tokenizer is in use, so the reference is alive
            return tf.concat([tf.cast(tokenizer_ref()(text), tf.int32), end], axis=0)

        _DOCUMENT_TOKENS[tokenizer] = tokens
    return _DOCUMENT_TOKENS[tokenizer]
