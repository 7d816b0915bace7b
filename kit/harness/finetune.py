"""Fine-tuning policy: freezing the backbone, LoRA adapters, a learning rate of the backbone's own.

All of it acts on the keras-hub backbone the family built (`Built.backbone`);
a model without one (tabular, image CNN) refuses these settings.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kit.config import Config
from kit.console import say
from kit.errors import TrainingError


def fine_tuning_settings(config: Config) -> list[str]:
    """The fine-tuning settings a config uses, by name."""
    model, train = config.model, config.train
    used = {
        "model.freeze_backbone": model.freeze_backbone,
        "model.unfreeze_backbone_after": model.unfreeze_backbone_after is not None,
        "model.lora_rank": model.lora_rank is not None,
        "train.backbone_learning_rate": train.backbone_learning_rate is not None,
    }
    return [name for name, on in used.items() if on]


def apply_fine_tuning(config: Config, model: keras.Model, backbone: Any) -> None:
    """Check the fine-tuning settings and apply freezing or LoRA, before compiling."""
    settings = fine_tuning_settings(config)
    if not settings:
        return
    if backbone is None:
        raise TrainingError(f"{settings[0]} needs a keras-hub backbone (text or generation); this model has none.")
    if "model.lora_rank" in settings and len(settings) > 1:
        others = ", ".join(name for name in settings if name != "model.lora_rank")
        raise TrainingError(f"Set model.lora_rank or {others}, not both (LoRA trains only its adapters).")
    after = config.model.unfreeze_backbone_after
    if after is not None and after >= config.train.epochs:
        raise TrainingError(
            f"model.unfreeze_backbone_after is {after} but training has {config.train.epochs} epochs, so the "
            f"backbone would never train. Lower it, or use model.freeze_backbone: true."
        )
    if config.model.freeze_backbone and after is None:
        backbone.trainable = False
    elif config.model.lora_rank is not None:
        enable_lora(backbone, config.model.lora_rank)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    say(f"kit: fine-tuning {trainable:,} of {model.count_params():,} parameters")


def enable_lora(backbone: Any, rank: int) -> None:
    backbone.enable_lora(rank)
    # keras-hub leaves the adapted layers' biases trainable, but its adapter file holds only the
    # low-rank kernels: freeze the biases so the adapters alone reproduce the fine-tuned backbone.
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False) and getattr(layer, "bias", None) is not None:
            layer.bias.trainable = False


def backbone_rate(config: Config, model: keras.Model, backbone: Any) -> tuple[list[Any], float]:
    """The backbone weights that learn at a rate of their own, and that rate's scale (else [], 1)."""
    train = config.train
    if train.backbone_learning_rate is None and config.model.unfreeze_backbone_after is None:
        return [], 1.0
    backbone_weights = backbone.trainable_weights
    owned = {id(w) for w in backbone_weights}
    if all(id(w) in owned for w in model.trainable_weights):
        raise TrainingError(
            "Every trainable weight of this model belongs to its backbone (a causal LM's output layer is its "
            "token embedding), so there is no head to train apart from it. Remove train.backbone_learning_rate "
            "and model.unfreeze_backbone_after; set train.learning_rate instead."
        )
    scale = 1.0 if train.backbone_learning_rate is None else train.backbone_learning_rate / train.learning_rate
    return backbone_weights, scale
