"""The trainable embedder: raw pixels -> Standardize (the preprocessing contract) -> backbone."""
from __future__ import annotations

import keras

from tfface.models.registry import get_backbone
from tfface.core.preprocessing import Standardize


def build_embedder(
    backbone: str,
    image_size: tuple[int, int],
    embedding_size: int = 512,
    standardization: str = "fixed_image_standardization",
    **backbone_kwargs,
) -> keras.Model:
    """Builds ``pixels in [0, 255] (B, H, W, 3) -> embeddings (B, D)``.

    The standardization is the model's first layer, so whoever runs or exports the model
    applies the same one; ``embedder.get_layer("standardize").standardization`` names it.
    """
    net = get_backbone(backbone, input_shape=(*image_size, 3), embedding_size=embedding_size, **backbone_kwargs)
    pixels = keras.Input((*image_size, 3), name="pixels")
    embeddings = net(Standardize(standardization, name="standardize")(pixels))
    return keras.Model(pixels, embeddings, name=f"{backbone}_embedder")
