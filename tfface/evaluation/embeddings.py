"""Embedding extraction: load photos the way the model expects them, embed in batches."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from absl import logging

from tfface import images

EmbedFn = Callable[[np.ndarray], np.ndarray]


def load_image(path: str, image_size: tuple[int, int]) -> np.ndarray:
    """Reads one photo as RGB uint8 at ``image_size`` through the image contract (:mod:`tfface.images`)."""
    return images.load(path, image_size)


def embed_paths(
    embed: EmbedFn,
    paths: Sequence[str],
    image_size: tuple[int, int],
    batch_size: int = 100,
    use_flipped_images: bool = False,
) -> np.ndarray:
    """Embeds image files in batches; returns (len(paths), D), or (len(paths), 2D) with flips.

    ``embed`` maps uint8 images (B, H, W, 3) to embeddings (B, D). With
    ``use_flipped_images`` each image's embedding is concatenated with the embedding of its
    mirror image, as facenet's ``validate_on_lfw`` does.
    """
    outputs = []
    for start in range(0, len(paths), batch_size):
        batch = np.stack([load_image(p, image_size) for p in paths[start:start + batch_size]])
        emb = np.asarray(embed(batch))
        if use_flipped_images:
            emb = np.concatenate([emb, np.asarray(embed(batch[:, :, ::-1]))], axis=1)
        outputs.append(emb)
        logging.log_every_n_seconds(logging.INFO, "embedded %d/%d images", 10, start + len(batch), len(paths))
    return np.concatenate(outputs)
