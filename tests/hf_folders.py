"""Tiny Hugging Face model folders for tests, made through keras-hub's own converters.

A test needs a RoBERTa or ViT folder as `transformers` would save it, but no
registry package ships one and tests never download. keras-hub's converter
for a model type says, weight by weight, which Hugging Face tensor fills
which Keras variable (`port_weight(variable, key, hook_fn)`). Running it with
a loader that records those calls gives every tensor name; each tensor's
Hugging Face shape is the one the converter's `hook_fn` maps onto the Keras
variable's shape. The folder then holds seeded random weights in exactly the
layout keras-hub reads from a real checkpoint.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np


class _Recorder:
    """Stands for keras-hub's SafetensorLoader: remembers what the converter asks for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int], Any]] = []

    def port_weight(self, keras_variable: Any, hf_weight_key: str, hook_fn: Any = None) -> None:
        self.calls.append((hf_weight_key, list(keras_variable.shape), hook_fn))


def _candidates(shape: list[int]) -> list[tuple[int, ...]]:
    """Hugging Face shapes a Keras shape may come from: itself, reversed, or heads merged/split."""
    found = {tuple(shape), tuple(reversed(shape))}
    for split in range(1, len(shape)):
        head, tail = math.prod(shape[:split]), math.prod(shape[split:])
        found |= {(head, tail), (tail, head)}
    found.add((math.prod(shape),))
    for permutation in itertools.permutations(shape):
        found.add(tuple(permutation))
    if len(shape) == 4:  # convolution kernels: (out, in, h, w) in PyTorch, (h, w, in, out) in Keras
        found.add((shape[3], shape[2], shape[0], shape[1]))
    if len(shape) == 3 and shape[0] == 1:
        found.add(tuple(shape[1:]))
    found.add((1, *shape))  # a leading batch axis the converter drops (ViT position table)
    for offset in (1, 2):  # position tables with reserved rows the converter slices off (RoBERTa: 2)
        found.add((shape[0] + offset, *shape[1:]))
    return sorted(found)


def _hf_tensor(key: str, shape: list[int], hook_fn: Any, rng: np.random.Generator) -> np.ndarray:
    for candidate in _candidates(shape):
        tensor = rng.normal(0, 0.05, candidate).astype("float32")
        try:
            mapped = hook_fn(tensor, shape) if hook_fn else tensor
        except Exception:
            continue
        if list(np.shape(mapped)) == shape:
            return tensor
    raise AssertionError(f"no Hugging Face shape of {key} maps to Keras shape {shape}")


def write_folder(folder: Path, model_type: str, config: dict[str, Any], seed: int = 0) -> Path:
    """A Hugging Face folder (config.json, model.safetensors) of `model_type` with seeded random weights."""
    from keras_hub.src.utils.transformers.preset_loader import TransformersPresetLoader
    from safetensors.numpy import save_file

    config = {"model_type": model_type, **config}
    converter = TransformersPresetLoader(str(folder), config).converter
    backbone = converter.backbone_cls(**converter.convert_backbone_config(config))
    recorder = _Recorder()
    converter.convert_weights(backbone, recorder, config)
    rng = np.random.default_rng(seed)
    weights = {key: _hf_tensor(key, shape, hook, rng) for key, shape, hook in recorder.calls}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def roberta_folder(folder: Path, texts: list[str], seed: int = 0) -> Path:
    """A 1-layer RoBERTa whose byte-level BPE (vocab.json, merges.txt) is learned from `texts`, as real ones are."""
    from kit.text import train_bpe

    vocabulary, merges = train_bpe(texts * 3, 400, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    config = {
        "vocab_size": len(vocabulary),
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "hidden_size": 16,
        "intermediate_size": 32,
        "hidden_dropout_prob": 0.0,
        "max_position_embeddings": 66,
        "architectures": ["RobertaModel"],
    }
    write_folder(folder, "roberta", config, seed)
    (folder / "vocab.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def vit_folder(folder: Path, image_size: int = 16, seed: int = 0) -> Path:
    """A 1-layer ViT with 8x8 patches and a preprocessor_config.json (ImageNet-style normalisation)."""
    config = {
        "image_size": image_size,
        "patch_size": 8,
        "num_channels": 3,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "hidden_size": 16,
        "intermediate_size": 32,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "qkv_bias": True,
        "architectures": ["ViTModel"],
    }
    write_folder(folder, "vit", config, seed)
    _write_image_processor(folder, image_size)
    return folder


def dinov2_folder(folder: Path, image_size: int = 28, seed: int = 0) -> Path:
    """A 1-layer DINOv2 with 14x14 patches and a preprocessor_config.json."""
    config = {
        "image_size": image_size,
        "patch_size": 14,
        "num_channels": 3,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "hidden_size": 16,
        "mlp_ratio": 2,
        "layerscale_value": 1.0,
        "use_swiglu_ffn": False,
        "hidden_dropout_prob": 0.0,
        "drop_path_rate": 0.0,
        "architectures": ["Dinov2Model"],
    }
    write_folder(folder, "dinov2", config, seed)
    _write_image_processor(folder, image_size)
    return folder


def _write_image_processor(folder: Path, size: int) -> None:
    processor = {
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"height": size, "width": size},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2), encoding="utf-8")
