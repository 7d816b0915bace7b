"""Decoding image files the one way kit does, in the scan's check and in the tf.data pipeline."""

from __future__ import annotations

from typing import Any


def decode(contents: Any, channels: int) -> Any:
    """An image file's bytes -> a uint8 tensor [height, width, channels] (first frame of an animation).

    TensorFlow decodes each format at its own channel count and kit converts after,
    rather than asking the decoder for `channels`: GIF, BMP and WebP decoders refuse a
    grayscale request, CMYK JPEGs too. Alpha is dropped; gray becomes RGB when asked.
    """
    import tensorflow as tf

    image = tf.io.decode_image(contents, channels=0, expand_animations=False)
    have = tf.shape(image)[-1]
    rgb = tf.cond(have >= 3, lambda: image[..., :3], lambda: tf.image.grayscale_to_rgb(image[..., :1]))
    if channels == 3:
        return rgb
    return tf.cond(have >= 3, lambda: tf.cast(tf.image.rgb_to_grayscale(rgb), tf.uint8), lambda: image[..., :1])
