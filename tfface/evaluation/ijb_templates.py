"""IJB template features, as the reference protocol (InsightFace's IJB evaluation) builds them.

Per face image, the feature is the model's embedding, switched by three options:

* **F** (flip): embedding of the face + embedding of its mirror image (else the face alone);
* **N** (norm): keep the feature's norm (else L2-normalise each image's feature first);
* **D** (detector score): multiply the feature by the face's detector score from the 5-points file.

A template's feature is then the **mean** of its images within each media (a video's frames, or
one photo), **summed** across its medias, and **L2-normalised**. tfface exports return
L2-normalised embeddings, so N changes the result only together with F (the norm of a face +
mirror sum says how much the two agree).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Variant(NamedTuple):
    """One combination of the N, D, F switches."""

    norm: bool
    detector: bool
    flip: bool

    @property
    def name(self) -> str:
        """``NDF`` with ``-`` for a switch that is off (``---`` is the plain protocol)."""
        return "".join(letter if on else "-" for letter, on in zip("NDF", self))


def variants(flip: bool = True) -> list[Variant]:
    """All eight variants (the four without F when no mirror features were computed)."""
    flips = (False, True) if flip else (False,)
    return [Variant(n, d, f) for f in flips for n in (False, True) for d in (False, True)]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in float64."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)


def image_features(embeddings: np.ndarray, mirrored: np.ndarray | None, scores: np.ndarray, variant: Variant
                   ) -> np.ndarray:
    """Per-image features (N, D) float64 of ``variant`` from the embeddings (N, D), those of the
    mirror images (or None) and the detector scores (N,)."""
    features = np.asarray(embeddings, np.float64)
    if variant.flip:
        if mirrored is None:
            raise ValueError("variant with F: the mirror images' embeddings are needed")
        features = features + mirrored
    if not variant.norm:
        features = l2_normalize(features)
    if variant.detector:
        features = features * np.asarray(scores, np.float64)[:, None]
    return features


def template_features(features: np.ndarray, templates: np.ndarray, medias: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique template ids, their L2-normalised features (T, D) float64): the mean of
    each template's images within a media, summed over its medias. Vectorised (sorts once)."""
    templates, medias = np.asarray(templates), np.asarray(medias)
    order = np.lexsort((medias, templates))
    t, m = templates[order], medias[order]
    media_start = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (m[1:] != m[:-1])])
    counts = np.diff(np.r_[media_start, len(t)])
    media_means = np.add.reduceat(np.asarray(features, np.float64)[order], media_start, axis=0) / counts[:, None]
    media_templates = t[media_start]
    template_start = np.flatnonzero(np.r_[True, media_templates[1:] != media_templates[:-1]])
    sums = np.add.reduceat(media_means, template_start, axis=0)
    return media_templates[template_start], l2_normalize(sums)
