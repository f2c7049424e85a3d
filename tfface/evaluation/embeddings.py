"""Embedding extraction: load photos the way the model expects them, embed in batches.

Two kinds of test-time flip augmentation, as the seeds do them: facenet's
``use_flipped_images`` concatenates an image's embedding with its mirror's (2D features);
InsightFace's flip TTA (:func:`flip_sum`) adds them and L2-normalises the sum.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from tfface.core import images

EmbedFn = Callable[[np.ndarray], np.ndarray]


def load_image(path: str, image_size: tuple[int, int]) -> np.ndarray:
    """Reads one photo as RGB uint8 at ``image_size`` through the image contract (:mod:`tfface.core.images`)."""
    return images.load(path, image_size)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def flip_sum(embeddings: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
    """InsightFace's flip TTA: embedding of the image + embedding of its mirror, re-normalised."""
    return l2_normalize(np.asarray(embeddings, np.float64) + np.asarray(mirrored, np.float64))


def embed_batches(
    embed: EmbedFn,
    load_batch: Callable[[int, int], np.ndarray],
    count: int,
    batch_size: int = 100,
    mirror: bool = False,
    progress: bool = False,
    desc: str = "embedding",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (count, D) of ``load_batch(start, stop)`` uint8 batches, and with ``mirror``
    those of the mirror images (else None); a progress bar on stderr with ``progress``."""
    plain, mirrored = [], []
    with tqdm(total=count, desc=desc, unit="img", disable=not progress, mininterval=1.0, leave=False) as bar:
        for start in range(0, count, batch_size):
            batch = load_batch(start, min(start + batch_size, count))
            plain.append(np.asarray(embed(batch)))
            if mirror:
                mirrored.append(np.asarray(embed(np.ascontiguousarray(batch[:, :, ::-1]))))
            bar.update(len(batch))
    return np.concatenate(plain), (np.concatenate(mirrored) if mirror else None)


def embed_images(
    embed: EmbedFn, faces: np.ndarray, batch_size: int = 100, mirror: bool = False, progress: bool = False,
    desc: str = "embedding",
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`embed_batches` over uint8 ``faces`` (N, H, W, 3) already at the model's size."""
    return embed_batches(embed, lambda a, b: faces[a:b], len(faces), batch_size, mirror, progress, desc)


def embed_paths(
    embed: EmbedFn,
    paths: Sequence[str],
    image_size: tuple[int, int],
    batch_size: int = 100,
    use_flipped_images: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Embeds image files in batches; returns (len(paths), D), or (len(paths), 2D) with flips.

    ``embed`` maps uint8 images (B, H, W, 3) to embeddings (B, D). With
    ``use_flipped_images`` each image's embedding is concatenated with the embedding of its
    mirror image, as facenet's ``validate_on_lfw`` does.
    """
    def load_batch(start: int, stop: int) -> np.ndarray:
        return np.stack([load_image(p, image_size) for p in paths[start:stop]])

    plain, mirrored = embed_batches(embed, load_batch, len(paths), batch_size, use_flipped_images, progress)
    return plain if mirrored is None else np.concatenate([plain, mirrored], axis=1)
