"""The `causal_text` input kind and the decoder families that build it.

- `gpt-tiny` / `gpt-small`: a keras-hub `GPT2Backbone` trained from scratch,
  with a byte-level BPE vocabulary learned from the project's training text
  (the algorithm GPT-2 used) in keras-hub's `GPT2Tokenizer`, so the saved
  model and preset load with plain keras-hub;
- `pretrained-decoder`: a keras-hub causal-LM preset folder, a Hugging Face
  folder keras-hub converts (GPT-2, Llama, Gemma, Mistral, Qwen...), a kit
  generation run (training continues from it), a llama.cpp `.gguf` file
  (converted once to a Hugging Face folder), or a preset name (online).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kit
from kit.compat import fix_keras_hub
from kit.data import TextField
from kit.text import (
    PREPROCESSOR_DIR,
    check_fits,
    load_preset,
    load_saved_preprocessor,
    save_preprocessor,
    strings,
    train_bpe,
)

# GPT2Tokenizer pads with id 0; if the end-of-text token were id 0 too,
# generate() would stop at once. Reserve "<pad>" first.
PAD_TOKEN, END_TOKEN = "<pad>", "<|endoftext|>"


class CausalText(kit.InputKind):
    name = "causal_text"
    description = "Plain text a causal language model learns to continue (data.text_column, one document per row)."
    default_backbone = "gpt-tiny"
    per_example = False  # token windows for a causal LM: only tasks that name this kind take it

    def columns(self) -> list[str]:
        column = self.config.data.text_column
        if not isinstance(column, str):
            raise kit.ConfigError(f"Generation reads one text column; data.text_column is {column!r}.")
        return [column]

    def setting(self, column: str) -> str:
        return "data.text_column"

    def make_fields(self, source: Any) -> list[Any]:
        return [TextField(column) for column in self.columns()]

    @classmethod
    def detect(cls, config: Any, columns: list[str], source_hint: str | None) -> bool:
        return isinstance(config.data.text_column, str) and config.data.text_column in columns


class Decoder(kit.Backbone):
    """What both decoder families share: a keras-hub causal-LM preprocessor and backbone."""

    input_kinds = ("causal_text",)
    export_requirements = ("tensorflow-text",)

    def __init__(self, reference: Any, kind: Any, config: Any):
        super().__init__(reference, kind, config)
        self._preprocessor: Any = None
        self._backbone: Any = None

    @property
    def sequence_length(self) -> int:
        return self.config.model.sequence_length

    @property
    def column(self) -> str:
        return self.kind.columns()[0]

    @property
    def preprocessor(self) -> Any:
        """keras-hub's `CausalLMPreprocessor` for this backbone (what `generate()` uses)."""
        if self._preprocessor is None:
            fix_keras_hub()  # tokenise eagerly (prompts, exports) exactly as tf.data does in training
            self._preprocessor = self.make_preprocessor()
        return self._preprocessor

    @property
    def tokenizer(self) -> Any:
        return self.preprocessor.tokenizer

    def make_preprocessor(self) -> Any:
        raise NotImplementedError

    def preprocess_batch(self, features: dict[str, Any]) -> dict[str, Any]:
        """Prompts -> padded token ids, as `generate()` prepares them (exports and serving)."""
        return self.preprocessor.generate_preprocess(features[self.column])

    def build(self) -> kit.Built:
        import keras

        backbone = self._backbone = self.make_backbone()
        inputs = {name: keras.Input(shape=(None,), dtype=t.dtype, name=name) for name, t in backbone.input.items()}
        return kit.Built(inputs, backbone(inputs), backbone=backbone, preprocessor=self.preprocessor)

    def save(self, folder: Path) -> dict[str, Any]:
        save_preprocessor(self.preprocessor, self._backbone, folder / PREPROCESSOR_DIR)
        return {"preprocessor_dir": PREPROCESSOR_DIR, "sequence_length": self.sequence_length}

    def load(self, folder: Path, state: dict[str, Any]) -> None:
        self._preprocessor = load_saved_preprocessor(folder / PREPROCESSOR_DIR, "causal_lm")


class GPTFromScratch(Decoder):
    name = "gpt"
    description = "GPT-2-style decoder trained from scratch, byte-level BPE vocabulary learned from the text."
    sizes = {
        "gpt-tiny": {"num_layers": 2, "num_heads": 2, "hidden_dim": 128, "intermediate_dim": 512},
        "gpt-small": {"num_layers": 4, "num_heads": 4, "hidden_dim": 256, "intermediate_dim": 1024},
    }

    def __init__(self, reference: Any, kind: Any, config: Any):
        super().__init__(reference, kind, config)
        self.vocabulary: dict[str, int] = {}
        self.merges: list[str] = []

    def adapt(self, training_features: Any) -> None:
        texts = strings(training_features().map(lambda x: x[self.column]))
        self.vocabulary, self.merges = train_bpe(texts, self.config.model.vocabulary_size, [PAD_TOKEN, END_TOKEN])
        _ = self.preprocessor  # build the lookup tables eagerly, not inside a tf.data graph

    def make_preprocessor(self) -> Any:
        import keras_hub

        tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=self.vocabulary, merges=self.merges)
        return keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=self.sequence_length)

    def make_backbone(self) -> Any:
        import keras_hub

        return keras_hub.models.GPT2Backbone(
            vocabulary_size=self.tokenizer.vocabulary_size(),
            max_sequence_length=self.sequence_length,
            dropout=self.config.model.dropout,
            **self.size,
        )


class PretrainedDecoder(Decoder):
    name = "pretrained-decoder"
    description = "A pretrained causal LM: keras-hub preset, Hugging Face folder, kit generation run, GGUF file."

    @classmethod
    def accepts(cls, reference: Any) -> bool:
        if reference.form == "file":
            return reference.path.suffix.lower() == ".gguf"
        return reference.form in ("folder", "run", "preset")

    def location(self) -> str:
        """Where keras-hub loads from: a GGUF file is converted to a Hugging Face folder first."""
        if self.reference.form == "file":
            from kit_plugins.generation import gguf

            return str(gguf.hugging_face_folder(self.reference.path))
        return self.reference.location()

    def adapt(self, training_features: Any) -> None:
        self.load_pretrained()

    def load_pretrained(self) -> None:
        if self._backbone is not None:
            return
        import keras_hub

        location = self.location()
        causal_lm = load_preset(location, keras_hub.models.CausalLM)
        check_fits(str(self.reference), causal_lm.backbone, causal_lm.preprocessor.tokenizer, self.sequence_length)
        self._backbone, self._preprocessor = causal_lm.backbone, causal_lm.preprocessor
        self._preprocessor.sequence_length = self.sequence_length

    def make_preprocessor(self) -> Any:
        self.load_pretrained()
        return self._preprocessor

    def make_backbone(self) -> Any:
        self.load_pretrained()
        return self._backbone
