"""Sub-center ArcFace: K centres per class, and the step that drops noisy samples after training."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tfface.heads.arcface import ArcFace
from tfface.heads.registry import register_head


@register_head("subcenter_arcface")
class SubCenterArcFace(ArcFace):
    """ArcFace over K sub-centres per class: a class's cosine is the largest of its K.

    Paper: "Sub-center ArcFace: Boosting Face Recognition by Large-scale Noisy Web Faces"
    (Deng et al., ECCV 2020), https://www.ecva.net/papers/eccv_2020/papers_ECCV/papers/123560715.pdf,
    eq. (2). ``kernel`` is (D, C * K), class c's sub-centres in columns ``c K .. c K + K - 1``;
    ``cos(theta_j) = max_k cos(x, w_jk)``, and the target angle is to the row's nearest target
    sub-centre, so gradients reach only that sub-centre. After training, :func:`clean_subcentres`
    keeps each class's dominant sub-centre and drops the samples far from it (the paper's
    step before retraining with K=1 on the cleaned data).

    Args:
        num_classes: number of identities C.
        scale, margin, easy_margin: ArcFace's.
        centres_per_class: K >= 1 (3 in the paper).
    """

    def __init__(self, num_classes: int, scale: float = 64.0, margin: float = 0.5, centres_per_class: int = 3,
                 **kwargs):
        super().__init__(num_classes, scale=scale, margin=margin, **kwargs)
        if int(centres_per_class) != centres_per_class or int(centres_per_class) < 1:
            raise ValueError(f"centres_per_class: expected an integer >= 1, got {centres_per_class}")
        self.centres_per_class = int(centres_per_class)

    def get_config(self):
        return {**super().get_config(), "centres_per_class": self.centres_per_class}


class Cleaned(NamedTuple):
    """:func:`clean_subcentres`' result: ``keep`` (N,) bool, the samples within the threshold of
    their class's dominant sub-centre; ``dominant`` (C,) that sub-centre's index per class;
    ``centres`` (D, C) the dominant sub-centres (to start the K=1 retraining from);
    ``angles`` (N,) each sample's angle to it, in degrees."""

    keep: np.ndarray
    dominant: np.ndarray
    centres: np.ndarray
    angles: np.ndarray


def clean_subcentres(kernel: np.ndarray, embeddings: np.ndarray, labels: np.ndarray, centres_per_class: int,
                     threshold_degrees: float = 75.0) -> Cleaned:
    """The paper's cleaning step: per class, the sub-centre nearest to most of its samples is
    dominant; samples farther than ``threshold_degrees`` from it are dropped (75 in the paper).

    ``kernel`` (D, C * K) is a trained :class:`SubCenterArcFace`'s, ``embeddings`` (N, D) the
    training samples' (any norm), ``labels`` (N,) their classes.
    """
    k = int(centres_per_class)
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 2 or kernel.shape[1] % k:
        raise ValueError(f"kernel: expected (D, C * {k}) sub-centres, got shape {kernel.shape}")
    if not 0.0 < threshold_degrees <= 180.0:
        raise ValueError(f"threshold_degrees: expected a value in (0, 180], got {threshold_degrees:g}")
    num_classes = kernel.shape[1] // k
    labels = np.asarray(labels, np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels: expected classes in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    x = np.asarray(embeddings, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    w = kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    columns = labels[:, None] * k + np.arange(k)[None, :]
    cos = np.einsum("nd,dnk->nk", x, w[:, columns])  # each sample against its class's K sub-centres
    votes = np.zeros((num_classes, k), np.int64)
    np.add.at(votes, (labels, cos.argmax(axis=1)), 1)
    dominant = votes.argmax(axis=1)
    angles = np.degrees(np.arccos(np.clip(cos[np.arange(len(labels)), dominant[labels]], -1.0, 1.0)))
    centres = kernel[:, np.arange(num_classes) * k + dominant]
    return Cleaned(angles <= threshold_degrees, dominant, centres.astype(np.float32), angles)



