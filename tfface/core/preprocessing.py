"""The preprocessing contract: one named standardization per model, applied in-graph.

A model records the name of its standardization and its image size when it is built
(:class:`Standardize` is the first layer of every embedder), so training, evaluation and the
exported SavedModel apply exactly the same function to raw pixels in [0, 255].
"""
from __future__ import annotations

from typing import Callable

import keras
import tensorflow as tf


def fixed_image_standardization(images: tf.Tensor) -> tf.Tensor:
    """``(x - 127.5) / 128`` (facenet's ``--use_fixed_image_standardization``)."""
    return (tf.cast(images, tf.float32) - 127.5) / 128.0


def prewhiten(images: tf.Tensor) -> tf.Tensor:
    """Per-image zero mean, unit variance (facenet's ``prewhiten``).

    The standard deviation is floored at ``1/sqrt(number of values)`` as facenet does, so a
    flat image does not divide by zero. Works on one image (H, W, C) or a batch (B, H, W, C).
    """
    x = tf.cast(images, tf.float32)
    axes = [-3, -2, -1]
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    std = tf.math.reduce_std(x, axis=axes, keepdims=True)
    size = tf.cast(tf.reduce_prod(tf.shape(x)[-3:]), tf.float32)
    return (x - mean) / tf.maximum(std, tf.math.rsqrt(size))


def minus_one_to_one(images: tf.Tensor) -> tf.Tensor:
    """``(x - 127.5) / 127.5`` (InsightFace / MultiFace)."""
    return (tf.cast(images, tf.float32) - 127.5) / 127.5


def scale_1_128(images: tf.Tensor) -> tf.Tensor:
    """``x / 128``: Caffe's ``input_scale`` 0.0078125 (SeqFace). Its mean image is subtracted
    after this, inside the model (:class:`MeanImage`, scaled alike: exact, 128 is a power of 2)."""
    return tf.cast(images, tf.float32) * 0.0078125


#: dlib's ``input_rgb_image_sized`` means (R, G, B) of its face recognition ResNet.
DLIB_MEANS = (122.782, 117.001, 104.298)


def dlib_standardization(images: tf.Tensor) -> tf.Tensor:
    """``(x - per-channel mean) / 256`` (dlib's face recognition ResNet; RGB means :data:`DLIB_MEANS`)."""
    return (tf.cast(images, tf.float32) - tf.constant(DLIB_MEANS, tf.float32)) / 256.0


STANDARDIZATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "fixed_image_standardization": fixed_image_standardization,
    "prewhiten": prewhiten,
    "minus_one_to_one": minus_one_to_one,
    "scale_1_128": scale_1_128,
    "dlib": dlib_standardization,
}


def get_standardization(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns the standardization function called ``name``."""
    if name not in STANDARDIZATIONS:
        raise ValueError(f"unknown standardization {name!r}; expected one of {sorted(STANDARDIZATIONS)}")
    return STANDARDIZATIONS[name]


@keras.saving.register_keras_serializable(package="tfface")
class Standardize(keras.layers.Layer):
    """Applies the named standardization to pixels in [0, 255]; always computes in float32."""

    def __init__(self, standardization: str = "fixed_image_standardization", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.standardization = standardization
        self._fn = get_standardization(standardization)

    def call(self, images):
        return self._fn(images)

    def get_config(self):
        return {**super().get_config(), "standardization": self.standardization}


@keras.saving.register_keras_serializable(package="tfface")
class MeanImage(keras.layers.Layer):
    """Subtracts a fixed per-pixel mean image (H, W, C) (Caffe's ``mean.binaryproto``), float32.

    The mean is a non-trainable weight, so exports carry it and fingerprint it with the model."""

    def __init__(self, mean_shape: tuple[int, int, int], **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean_shape = tuple(int(d) for d in mean_shape)
        self.mean = self.add_weight(shape=self.mean_shape, initializer="zeros", trainable=False, name="mean")

    def call(self, images):
        return tf.cast(images, tf.float32) - self.mean

    def get_config(self):
        return {**super().get_config(), "mean_shape": list(self.mean_shape)}
