"""Images for backbone families: decoding in tf.data, and a base class. Public API for backbone plugins.

`ImageBackbone` decodes the image column (a file path, or an array of
pixels) to a float tensor of the family's size and channels, one example at
a time in tf.data and a batch at a time in exports. Pixel values stay in
0-255: each family rescales and normalises inside its model, so an exported
model takes plain pixels.
"""

from __future__ import annotations

from typing import Any

from kit.backbone import Backbone, plain_graph_code


def decode_image(value: Any, size: list[int], channels: int) -> Any:
    """A path (string tensor) or a pixel array -> a float32 image of `size` [height, width] and `channels`."""
    import tensorflow as tf

    from kit.data.images import decode

    if value.dtype == tf.string:
        image = decode(tf.io.read_file(value), channels)
    else:
        image = value if value.shape.rank == 3 else value[..., tf.newaxis]
        if image.shape[-1] != channels:
            image = tf.image.grayscale_to_rgb(image) if channels == 3 else tf.image.rgb_to_grayscale(image)
    image = tf.image.resize(tf.cast(image, tf.float32), size)
    image.set_shape([*size, channels])
    return image


class ImageBackbone(Backbone):
    """Base of image families: `image_size()` and `channels()` say what `preprocess` decodes to."""

    input_kinds = ("image",)

    @property
    def column(self) -> str:
        return self.kind.columns()[0]

    def image_size(self) -> list[int]:
        return list(self.config.data.image_size)

    def channels(self) -> int:
        return 1 if self.config.data.color_mode == "grayscale" else 3

    @plain_graph_code
    def preprocess(self, features: dict[str, Any]) -> dict[str, Any]:
        return {self.column: decode_image(features[self.column], self.image_size(), self.channels())}

    @plain_graph_code
    def preprocess_batch(self, features: dict[str, Any]) -> dict[str, Any]:
        import tensorflow as tf

        def one(value: Any) -> Any:
            return decode_image(value, self.image_size(), self.channels())

        return {self.column: tf.map_fn(one, features[self.column], fn_output_signature=tf.float32)}

    def image_input(self) -> Any:
        import keras

        return keras.Input(shape=(*self.image_size(), self.channels()), name=self.column)
