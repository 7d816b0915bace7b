"""`cnn`, `cnn-wide`: a small convolutional network for images, trained from scratch.

Two blocks of two 3x3 convolutions (32/64 filters, or 64/128 for cnn-wide)
with max-pooling, then a dense layer of 128. Images are decoded and resized
to `data.image_size` with `data.color_mode` channels in tf.data.
"""

from __future__ import annotations

from typing import Any

import kit
from kit.images import ImageBackbone


class SmallCNN(ImageBackbone):
    name = "cnn"
    description = "Small convolutional network trained from scratch (data.image_size, data.color_mode)."
    sizes = {"cnn": {"filters": (32, 64)}, "cnn-wide": {"filters": (64, 128)}}

    def build(self) -> kit.Built:
        import keras

        image = self.image_input()
        x = keras.layers.Rescaling(1.0 / 255)(image)
        for i, filters in enumerate(self.size["filters"]):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}a")(x)
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}b")(x)
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(max(self.config.model.dropout, 0.25))(x)
        x = keras.layers.Dense(128, activation="relu", name="dense")(x)
        return kit.Built({self.column: image}, x)


@kit.hookimpl
def register_backbones(register: Any) -> None:
    register(SmallCNN)
