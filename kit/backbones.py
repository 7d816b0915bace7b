"""The built-in from-scratch backbone sizes, in a module light enough for config validation.

`kit.inputs` and `kit.decoders` build these; `kit.config` only needs to know
whether `model.backbone` names one of them (a model trained from scratch) or a
pretrained model (which changes the `auto` training defaults).
"""

from __future__ import annotations

# Small BERT-style encoders for text. Documented in the README's Models table.
TEXT_BACKBONES = {
    "bert-tiny": dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=256),
    "bert-small": dict(num_layers=4, num_heads=4, hidden_dim=256, intermediate_dim=512),
}
# GPT-2-style decoders for the generation task.
GPT_BACKBONES = {
    "gpt-tiny": dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=512),
    "gpt-small": dict(num_layers=4, num_heads=4, hidden_dim=256, intermediate_dim=1024),
}
TABULAR_BACKBONES = ("mlp",)
IMAGE_BACKBONES = {"cnn": (32, 64), "cnn-wide": (64, 128)}


def is_pretrained_backbone(name: str) -> bool:
    """True when `model.backbone` names something other than a built-in from-scratch size."""
    return name not in ("auto", *TEXT_BACKBONES, *TABULAR_BACKBONES, *IMAGE_BACKBONES, *GPT_BACKBONES)
