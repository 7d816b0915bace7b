"""Pretrained image backbones: ViT, DeiT, DINOv2 (Hugging Face folders keras-hub converts) and keras-hub presets.

The model takes plain pixels: rescaling and the normalisation the backbone was
trained with (the Hugging Face folder's `preprocessor_config.json`: image mean,
standard deviation and rescale factor) are layers inside it. Images are
decoded in tf.data as RGB at the backbone's own image size (`data.image_size`
and `data.color_mode` do not apply). One vector per image is the class token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kit
from kit.images import ImageBackbone
from kit.text import load_preset

IMAGE_MODEL_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers")
# ImageNet statistics: what these models use when a folder does not say.
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1 / 255}


def normalisation(folder: Path | None) -> dict[str, Any]:
    """Mean, standard deviation and rescale factor from a Hugging Face `preprocessor_config.json`."""
    path = folder / "preprocessor_config.json" if folder is not None else None
    if path is None or not path.is_file():
        return dict(IMAGENET)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise kit.ModelError(f"{path} is not valid JSON; it should hold the model's image normalisation.") from None
    mean, std = config.get("image_mean", IMAGENET["mean"]), config.get("image_std", IMAGENET["std"])
    if not config.get("do_normalize", True):
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    scale = config.get("rescale_factor", IMAGENET["scale"]) if config.get("do_rescale", True) else 1.0
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std], "scale": float(scale)}


class PretrainedImage(ImageBackbone):
    name = "pretrained-image"
    description = "A pretrained image model: ViT, DeiT, DINOv2 Hugging Face folders, keras-hub image presets."

    def __init__(self, reference: Any, kind: Any, config: Any):
        super().__init__(reference, kind, config)
        self._backbone: Any = None
        self.image_shape: list[int] = []
        self.stats: dict[str, Any] = {}

    @classmethod
    def accepts(cls, reference: Any) -> bool:
        if reference.form == "preset":
            return True
        folder = Path(reference.location()) if reference.form in ("folder", "run") else None
        model_type = reference.model_type().lower()
        converter = folder is not None and (folder / "image_converter.json").is_file()
        return converter or model_type in IMAGE_MODEL_TYPES or model_type.replace("backbone", "") in IMAGE_MODEL_TYPES

    def adapt(self, training_features: Any) -> None:
        import keras_hub

        if self._backbone is not None:
            return
        self._backbone = load_preset(self.reference.location(), keras_hub.models.Backbone)
        shape = getattr(self._backbone, "image_shape", None)
        if not shape or shape[0] is None:
            raise kit.ModelError(f"{self.reference} is not an image backbone kit can use (no fixed image shape).")
        self.image_shape = [int(n) for n in shape]
        self.stats = normalisation(self.reference.path if self.reference.form == "folder" else None)

    def image_size(self) -> list[int]:
        return self.image_shape[:2]

    def channels(self) -> int:
        return self.image_shape[2]

    def build(self) -> kit.Built:
        import keras

        image = self.image_input()
        x = keras.layers.Rescaling(self.stats["scale"], name="rescale")(image)
        variance = [s**2 for s in self.stats["std"]]
        x = keras.layers.Normalization(mean=self.stats["mean"], variance=variance, name="normalize")(x)
        sequence = self._backbone(x)
        pooled = keras.ops.take(sequence, 0, axis=1)  # the class token
        representation = keras.layers.Dropout(self.config.model.dropout)(pooled)
        return kit.Built({self.column: image}, representation, backbone=self._backbone, sequence=sequence)

    def save(self, folder: Path) -> dict[str, Any]:
        return {"image_shape": self.image_shape, **self.stats}

    def load(self, folder: Path, state: dict[str, Any]) -> None:
        self.image_shape = list(state["image_shape"])
        self.stats = {key: state[key] for key in ("mean", "std", "scale")}


@kit.hookimpl
def register_backbones(register: Any) -> None:
    register(PretrainedImage)
