"""BERT-style encoders trained from scratch: `bert-tiny`, `bert-small`.

The WordPiece vocabulary is learned from the training text with keras-hub's
`compute_word_piece_vocabulary`; tokenising and packing (one text, a pair of
texts, or words) happen in tf.data with keras-hub's BERT preprocessor. The
head sits on BERT's pooled output, as keras-hub's `BertTextClassifier` does.
"""

from __future__ import annotations

from typing import Any

import kit
from kit.text import TextEncoder, word_piece_vocabulary


class BertFromScratch(TextEncoder):
    name = "bert"
    description = "BERT-style Transformer encoder trained from scratch, WordPiece vocabulary learned from the data."
    sizes = {
        "bert-tiny": {"num_layers": 2, "num_heads": 2, "hidden_dim": 128, "intermediate_dim": 256},
        "bert-small": {"num_layers": 4, "num_heads": 4, "hidden_dim": 256, "intermediate_dim": 512},
    }
    pooling = "pooled"

    def __init__(self, reference: Any, kind: Any, config: Any):
        super().__init__(reference, kind, config)
        self.vocabulary: list[str] = []

    def adapt(self, training_features: Any) -> None:
        model = self.config.model
        texts = self.training_texts(training_features)
        self.vocabulary = word_piece_vocabulary(texts, model.vocabulary_size, model.lowercase)
        _ = self.preprocessor  # build the lookup tables eagerly, not inside a tf.data graph

    def make_preprocessor(self) -> Any:
        import keras_hub

        lowercase = self.config.model.lowercase
        tokenizer = keras_hub.models.BertTokenizer(
            vocabulary=self.vocabulary, lowercase=lowercase, strip_accents=lowercase
        )
        return keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=self.sequence_length)

    def make_backbone(self) -> Any:
        import keras_hub

        return keras_hub.models.BertBackbone(
            vocabulary_size=self.tokenizer.vocabulary_size(),
            max_sequence_length=self.sequence_length,
            dropout=self.config.model.dropout,
            **self.size,
        )


@kit.hookimpl
def register_backbones(register: Any) -> None:
    register(BertFromScratch)
