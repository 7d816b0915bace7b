"""Pretrained text models as encoders: keras-hub presets, Hugging Face folders, kit runs, preset names.

`model.backbone` names a folder keras-hub loads (a preset saved with
`save_to_preset`, or a Hugging Face folder keras-hub converts: BERT, MiniLM,
DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT, GPT-2, Llama...), a kit run
directory (the backbone preset it saved), or a keras-hub preset name (needs
the network). The tokenizer and preprocessor come from the same place; a
Hugging Face `tokenizer.json`'s lower-casing and accent stripping are
applied. One vector per example is the mean of the token vectors (what
sentence encoders such as all-MiniLM-L6-v2 are trained for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kit
from kit.text import TextEncoder, check_fits, load_preset, match_normalizer

# Hugging Face model types and keras-hub class-name fragments of image models (the image family's).
IMAGE_MODELS = ("vit", "deit", "dinov2", "dinov2_with_registers", "dinov3_vit", "swin", "resnet", "convnext")


def is_image_model(reference: Any) -> bool:
    model_type = reference.model_type().lower()
    folder = Path(reference.location()) if reference.form in ("folder", "run") else None
    if folder is not None and (
        (folder / "preprocessor_config.json").is_file() or (folder / "image_converter.json").is_file()
    ):
        return True
    return any(model_type == name or model_type.startswith(name) for name in IMAGE_MODELS)


class PretrainedEncoder(TextEncoder):
    name = "pretrained-text"
    description = "A pretrained text model (keras-hub preset, Hugging Face folder, kit run, preset name) as encoder."
    pooling = "mean"

    @classmethod
    def accepts(cls, reference: Any) -> bool:
        return reference.form in ("folder", "run", "preset") and not is_image_model(reference)

    def adapt(self, training_features: Any) -> None:
        self.load_pretrained()

    def load_pretrained(self) -> None:
        """Load the backbone and its preprocessor once; check that they fit the config."""
        if self._backbone is not None:
            return
        import keras_hub

        location = self.reference.location()
        self._backbone = load_preset(location, keras_hub.models.Backbone)
        self._preprocessor = text_preprocessor(location, self._backbone, self.sequence_length)
        self._preprocessor.build(None)
        if self.reference.path is not None:
            match_normalizer(self._preprocessor.tokenizer, Path(location))
        check_fits(str(self.reference), self._backbone, self._preprocessor.tokenizer, self.sequence_length)
        self.check_kind()

    def check_kind(self) -> None:
        import keras_hub

        if self.kind.name == "text_pair" and isinstance(self._preprocessor, keras_hub.models.CausalLMPreprocessor):
            raise kit.ConfigError(
                f"model.backbone {self.reference} is a decoder, whose preprocessor takes one text; a pair of texts "
                f"needs an encoder (BERT, MiniLM, RoBERTa...) or a built-in encoder such as bert-tiny."
            )

    @property
    def word_prefix(self) -> str:  # type: ignore[override]
        import keras_hub

        byte_level = isinstance(self.tokenizer, keras_hub.tokenizers.BytePairTokenizer)
        return " " if byte_level else ""  # byte-level BPE tokens carry their leading space

    def make_preprocessor(self) -> Any:
        self.load_pretrained()
        return self._preprocessor

    def make_backbone(self) -> Any:
        self.load_pretrained()
        return self._backbone


def text_preprocessor(location: str, backbone: Any, sequence_length: int) -> Any:
    """The preset's text-classifier preprocessor; for decoders (no such class), its causal-LM one."""
    import keras_hub

    for cls in (keras_hub.models.TextClassifierPreprocessor, keras_hub.models.CausalLMPreprocessor):
        try:
            return cls.from_preset(location, sequence_length=sequence_length)
        except ValueError:
            continue
    raise kit.ModelError(f"{location} has no text preprocessor keras-hub knows for {type(backbone).__name__}.")


@kit.hookimpl
def register_backbones(register: Any) -> None:
    register(PretrainedEncoder)
