"""kit's keras-hub fixes: what they promise, checked against the installed keras-hub."""

from __future__ import annotations

import numpy as np


def test_an_eager_byte_pair_tokenizer_splits_text_as_a_traced_one():
    """Indented text and spaces before punctuation, where keras-hub 0.32's eager and TensorFlow paths part ways."""
    import tensorflow as tf
    from keras_hub.src.tokenizers.byte_pair_tokenizer import BytePairTokenizer

    from kit.compat import _WHITESPACE_PROBE, fix_keras_hub

    fix_keras_hub()
    alphabet = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["Ġ", "Ċ", "ĠĠ"]
    tokenizer = BytePairTokenizer(vocabulary={char: i for i, char in enumerate(alphabet)}, merges=["Ġ Ġ"])
    for text in (_WHITESPACE_PROBE, "a  ,  b\n\n    c  .", "plain words"):
        eager = np.asarray(tokenizer(text)).tolist()
        traced = tf.function(tokenizer)(tf.constant(text)).numpy().tolist()
        assert eager == traced, text
