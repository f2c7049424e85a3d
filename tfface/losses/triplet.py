"""Triplet losses: online semi-hard and batch-hard mining, facenet's offline selection."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfface.heads.base import safe_sqrt


def pairwise_distances(embeddings: tf.Tensor, squared: bool = True) -> tf.Tensor:
    """(B, B) squared (or plain) euclidean distances, exactly 0 on the diagonal.

    The plain distance has a zero gradient where the distance is 0 (instead of NaN).
    """
    x = tf.cast(embeddings, tf.float32)
    sq = tf.reduce_sum(tf.square(x), axis=1)
    d2 = tf.maximum(sq[:, None] - 2.0 * tf.matmul(x, x, transpose_b=True) + sq[None, :], 0.0)
    d2 = d2 * (1.0 - tf.eye(tf.shape(x)[0]))
    if squared:
        return d2
    return tf.where(d2 > 0.0, safe_sqrt(d2), tf.zeros_like(d2))


def _pair_masks(labels: tf.Tensor):
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.cast(tf.eye(tf.shape(labels)[0]), tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


def triplet_semihard_loss(labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 0.2, squared: bool = True) -> tf.Tensor:
    """Online semi-hard triplet loss of FaceNet, with the semantics of TF-contrib's ``triplet_semihard_loss``.

    Paper: "FaceNet: A Unified Embedding for Face Recognition and Clustering" (Schroff et al.,
    CVPR 2015), https://arxiv.org/abs/1503.03832. For every positive pair (a, p), a != p, of the
    batch the negative is the closest n with ``d(a, n) > d(a, p)`` (semi-hard); if there is none,
    the farthest negative of a. Loss = ``sum over pairs of max(d(a, p) - d(a, n) + margin, 0)``
    divided by the number of positive pairs. Pairs whose anchor has no negative in the batch are
    left out of both sums.

    Args:
        labels: (B,) int identities.
        embeddings: (B, D), usually L2-normalised.
        margin: alpha.
        squared: squared euclidean distances (True: TF-contrib and facenet) or plain ones.

    Returns: scalar float32 (0 when the batch has no usable pair).
    """
    d = pairwise_distances(embeddings, squared=squared)
    positive, negative = _pair_masks(labels)
    positive = tf.logical_and(positive, tf.reduce_any(negative, axis=1, keepdims=True))
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    neg = negative[:, None, :]
    outside = tf.logical_and(neg, d_an > d_ap)
    inf = tf.constant(np.inf, tf.float32)
    semihard = tf.reduce_min(tf.where(outside, d_an, inf), axis=2)
    farthest = tf.reduce_max(tf.where(negative, d, -inf), axis=1, keepdims=True)
    chosen = tf.where(tf.reduce_any(outside, axis=2), semihard, farthest)
    hinge = tf.maximum(d - chosen + margin, 0.0)
    hinge = tf.where(positive, hinge, tf.zeros_like(hinge))
    count = tf.reduce_sum(tf.cast(positive, tf.float32))
    return tf.math.divide_no_nan(tf.reduce_sum(hinge), count)


def triplet_batch_hard_loss(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 0.2, squared: bool = False, soft: bool = False
) -> tf.Tensor:
    """Batch-hard triplet loss: hardest positive and hardest negative of every anchor.

    Paper: "In Defense of the Triplet Loss for Person Re-Identification" (Hermans et al., 2017),
    https://arxiv.org/abs/1703.07737. Loss = mean over anchors that have a positive and a
    negative in the batch of ``max(max_p d(a, p) - min_n d(a, n) + margin, 0)``, or with
    ``soft=True`` of ``log(1 + exp(max_p d(a, p) - min_n d(a, n)))`` (the paper's soft margin).

    Args:
        labels: (B,) int identities.
        embeddings: (B, D).
        margin: alpha (unused when soft).
        squared: squared euclidean distances, or plain ones (False: the paper).
        soft: softplus instead of the hinge.

    Returns: scalar float32 (0 when no anchor is usable).
    """
    d = pairwise_distances(embeddings, squared=squared)
    positive, negative = _pair_masks(labels)
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    hardest_pos = tf.reduce_max(tf.where(positive, d, tf.zeros_like(d)), axis=1)
    big = tf.reduce_max(d) + 1.0
    hardest_neg = tf.reduce_min(tf.where(negative, d, tf.zeros_like(d) + big), axis=1)
    gap = hardest_pos - hardest_neg
    per_anchor = tf.nn.softplus(gap) if soft else tf.maximum(gap + margin, 0.0)
    per_anchor = tf.where(valid, per_anchor, tf.zeros_like(per_anchor))
    return tf.math.divide_no_nan(tf.reduce_sum(per_anchor), tf.reduce_sum(tf.cast(valid, tf.float32)))


def triplet_loss(anchor: tf.Tensor, positive: tf.Tensor, negative: tf.Tensor, alpha: float = 0.2) -> tf.Tensor:
    """facenet's offline triplet loss: ``mean(max(||a - p||^2 - ||a - n||^2 + alpha, 0))``."""
    a, p, n = (tf.cast(t, tf.float32) for t in (anchor, positive, negative))
    pos = tf.reduce_sum(tf.square(a - p), axis=1)
    neg = tf.reduce_sum(tf.square(a - n), axis=1)
    return tf.reduce_mean(tf.maximum(pos - neg + alpha, 0.0))


def select_triplets(
    embeddings: np.ndarray,
    nrof_images_per_class: list[int] | np.ndarray,
    people_per_batch: int,
    alpha: float,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """facenet's offline triplet selection for ``train_tripletloss``.

    ``embeddings`` holds ``people_per_batch`` classes one after the other, class i with
    ``nrof_images_per_class[i]`` images. For every anchor/positive pair (a, p), a < p, of a
    class, one negative is drawn uniformly among the images of other classes with
    ``||a - n||^2 - ||a - p||^2 < alpha`` (facenet's "VGG Face selection": violating the margin,
    possibly harder than the positive); pairs without such a negative are skipped.

    Returns: (triplets (T, 3) int64 indices into ``embeddings`` [anchor, positive, negative] in
    random order, the number of anchor/positive pairs considered).
    """
    rng = rng if rng is not None else np.random.default_rng()
    emb = np.asarray(embeddings, np.float64)
    triplets: list[tuple[int, int, int]] = []
    num_pairs = 0
    start = 0
    for i in range(people_per_batch):
        count = int(nrof_images_per_class[i])
        for a in range(start, start + count - 1):
            d_neg = np.sum(np.square(emb[a] - emb), axis=1)
            d_neg[start : start + count] = np.nan
            for p in range(a + 1, start + count):
                d_pos = np.sum(np.square(emb[a] - emb[p]))
                with np.errstate(invalid="ignore"):
                    candidates = np.flatnonzero(d_neg - d_pos < alpha)
                if candidates.size:
                    triplets.append((a, p, int(candidates[rng.integers(candidates.size)])))
                num_pairs += 1
        start += count
    out = np.asarray(triplets, np.int64).reshape(-1, 3)
    rng.shuffle(out, axis=0)
    return out, num_pairs
