"""RoBERTa-style encoders trained from scratch: `roberta-tiny`, `roberta-small`.

Byte-level BPE (as RoBERTa and GPT-2 use) is learned from the training text
with Hugging Face `tokenizers` and wrapped in keras-hub's `RobertaTokenizer`;
the backbone is keras-hub's `RobertaBackbone`. Byte-level BPE has no unknown
tokens, and keeps case and accents. Pretrained RoBERTa folders (Hugging Face
format) load through the pretrained-encoder family instead.
"""

from __future__ import annotations

from typing import Any

import kit
from kit.text import TextEncoder, strings, train_bpe

# RoBERTa's special tokens, in the order its vocabulary gives them ids 0-4.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


class RobertaFromScratch(TextEncoder):
    name = "roberta"
    description = "RoBERTa-style Transformer encoder trained from scratch, byte-level BPE learned from the data."
    sizes = {
        "roberta-tiny": {"num_layers": 2, "num_heads": 2, "hidden_dim": 128, "intermediate_dim": 256},
        "roberta-small": {"num_layers": 4, "num_heads": 4, "hidden_dim": 256, "intermediate_dim": 512},
    }
    pooling = "mean"
    word_prefix = " "  # byte-level BPE tokens carry their leading space

    def __init__(self, reference: Any, kind: Any, config: Any):
        super().__init__(reference, kind, config)
        self.vocabulary: dict[str, int] = {}
        self.merges: list[str] = []

    def adapt(self, training_features: Any) -> None:
        texts = strings(self.training_texts(training_features))
        self.vocabulary, self.merges = train_bpe(texts, self.config.model.vocabulary_size, SPECIAL_TOKENS)
        _ = self.preprocessor  # build the lookup tables eagerly, not inside a tf.data graph

    def make_preprocessor(self) -> Any:
        import keras_hub

        tokenizer = keras_hub.models.RobertaTokenizer(vocabulary=self.vocabulary, merges=self.merges)
        return keras_hub.models.RobertaTextClassifierPreprocessor(tokenizer, sequence_length=self.sequence_length)

    def make_backbone(self) -> Any:
        import keras_hub

        return keras_hub.models.RobertaBackbone(
            vocabulary_size=self.tokenizer.vocabulary_size(),
            max_sequence_length=self.sequence_length,
            dropout=self.config.model.dropout,
            **self.size,
        )


@kit.hookimpl
def register_backbones(register: Any) -> None:
    register(RobertaFromScratch)
