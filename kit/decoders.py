"""Decoder (GPT-style) backbones for the `generation` task.

A project's `model.backbone` picks one:

- `gpt-tiny` / `gpt-small`: a keras-hub `GPT2Backbone` trained from scratch,
  with a byte-level BPE vocabulary trained on the project's own training text
  (HF `tokenizers`, the same algorithm GPT-2 used) and wrapped in keras-hub's
  `GPT2Tokenizer`, so the saved model and preset load with plain keras-hub;
- a local keras-hub preset folder of a causal LM, or a Hugging Face folder
  keras-hub converts (GPT-2, Llama, Gemma, ...), or a kit run directory whose
  model is a decoder: training continues from it.

Documents are tokenised in tf.data, joined with the end-of-text token and
packed into fixed-length windows, so no compute is spent on padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import tensorflow as tf

from kit.data.fields import TextField
from kit.errors import DataError, ModelError
from kit.inputs import (
    GPT_BACKBONES,
    Inputs,
    builtin_backbone,
    check_backbone_fits,
    load_pretrained,
    resolve_backbone_source,
)

# GPT2Tokenizer pads with id 0; if the end-of-text token were id 0 too,
# generate() would stop at once. Reserve "<pad>" first.
PAD_TOKEN, END_TOKEN = "<pad>", "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocabulary_size: int) -> tuple[dict[str, int], list[str]]:
    """Train a byte-level BPE vocabulary on `texts`; return (vocabulary, merges) for `GPT2Tokenizer`."""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        texts, vocab_size=vocabulary_size, min_frequency=2, special_tokens=[PAD_TOKEN, END_TOKEN], show_progress=False
    )
    model = json.loads(trainer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    if len(model["vocab"]) <= 2 + 256 and not merges:
        raise DataError("The training text is empty: there is nothing to learn a vocabulary from. Check data.train.")
    return model["vocab"], merges


def causal_lm_class(backbone: Any) -> type:
    """The keras-hub `CausalLM` subclass that belongs to `backbone` (GPT2CausalLM for GPT2Backbone...)."""
    import keras_hub

    pending = [keras_hub.models.CausalLM]
    while pending:
        cls = pending.pop()
        if getattr(cls, "backbone_cls", None) is type(backbone):
            return cls
        pending.extend(cls.__subclasses__())
    raise ModelError(
        f"The backbone {type(backbone).__name__} is not a decoder keras-hub can generate with. The generation task "
        f"needs a causal LM backbone: {', '.join(GPT_BACKBONES)}, or a GPT-2 / Llama / Gemma / Mistral preset folder."
    )


class DecoderInputs(Inputs):
    """Text for a causal LM: the decoder backbone, its tokenizer and its preprocessor."""

    kind = "decoder"

    def __init__(self, config: Any):
        super().__init__(config)
        self.column = config.data.text_column
        self.fields = [TextField(self.column)]
        self.sequence_length = config.model.sequence_length
        name = config.model.backbone
        self.builtin = name == "auto" or name in GPT_BACKBONES
        self.backbone_name = builtin_backbone(config, "gpt-tiny", GPT_BACKBONES, "decoder") if self.builtin else name
        self.vocabulary: dict[str, int] = {}
        self.merges: list[str] = []
        self._preprocessor: Any = None
        self._backbone: Any = None

    # -- learning / loading

    def adapt(self, text_dataset_fn: Any) -> None:
        if not self.builtin:
            self._load_pretrained()
            return
        texts = (t.decode("utf-8", "replace") for t in text_dataset_fn(self.column).as_numpy_iterator())
        self.vocabulary, self.merges = train_bpe(texts, self.config.model.vocabulary_size)
        self.preprocessor()

    def _load_pretrained(self) -> None:
        if self._backbone is not None:
            return
        import keras_hub

        source = resolve_backbone_source(self.backbone_name)
        causal_lm = load_pretrained(source, keras_hub.models.CausalLM)
        check_backbone_fits(source, causal_lm.backbone, causal_lm.preprocessor.tokenizer, self.sequence_length)
        self._backbone = causal_lm.backbone
        self._preprocessor = causal_lm.preprocessor
        self._preprocessor.sequence_length = self.sequence_length

    def preprocessor(self) -> Any:
        """keras-hub's CausalLMPreprocessor for this backbone (used by `generate()`)."""
        if self._preprocessor is None:
            if not self.builtin:
                self._load_pretrained()
            else:
                import keras_hub

                tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=self.vocabulary, merges=self.merges)
                self._preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
                    tokenizer, sequence_length=self.sequence_length
                )
        return self._preprocessor

    def preprocess_batch(self, x: dict[str, Any]) -> Any:
        """Strings -> padded token ids for the model (export checks and serving)."""
        return self.preprocessor().generate_preprocess(x[self.column])

    @property
    def tokenizer(self) -> Any:
        return self.preprocessor().tokenizer

    # -- model

    def build(self) -> tuple[Any, Any]:
        """Return (preprocessor, backbone): the generation task wraps both in a keras-hub CausalLM."""
        if not self.builtin:
            self._load_pretrained()
            return self._preprocessor, self._backbone
        import keras_hub

        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=len(self.vocabulary),
            max_sequence_length=self.sequence_length,
            dropout=self.config.model.dropout,
            **GPT_BACKBONES[self.backbone_name],
        )
        return self.preprocessor(), backbone

    def save(self, folder: Path) -> dict[str, Any]:
        # The tokenizer's vocabulary and merges travel inside model.keras (and the preset).
        return {"backbone": self.backbone_name, "sequence_length": self.sequence_length}

    def load(self, folder: Path, meta: dict[str, Any]) -> None:
        import keras_hub

        from kit.inputs import PRESET_DIR

        # model.keras holds the trained weights (and a copy of the preprocessor); the preset has the tokenizer.
        self._preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(str(folder / PRESET_DIR))
        self._backbone = False


# ------------------------------------------------------------------ packing


def pack_documents(dataset: tf.data.Dataset, tokenizer: Any, column: str, sequence_length: int) -> tf.data.Dataset:
    """Documents -> (inputs, next-token targets) windows of `sequence_length` tokens.

    Each document's tokens are followed by the end-of-text token; the stream
    is cut into windows of `sequence_length + 1` tokens (the last partial one
    is dropped), each giving `sequence_length` predictions.
    """
    end = tf.constant([tokenizer.end_token_id], tf.int32)

    def tokens(x: dict[str, Any]) -> Any:
        return tf.concat([tf.cast(tokenizer(x[column]), tf.int32), end], axis=0)

    def split(window: Any) -> Any:
        x = {"token_ids": window[:-1], "padding_mask": tf.ones([sequence_length], tf.bool)}
        return x, window[1:]

    stream = dataset.map(tokens, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    return stream.batch(sequence_length + 1, drop_remainder=True).map(split)
