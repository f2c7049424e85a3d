"""IJB metrics: 1:1 TAR at FAR (two rules) and 1:N CMC / TPIR at FPIR, vectorised and chunked.

**TAR at FAR.** The ROC is taken over every distinct score (higher = more alike). The reference
rule (InsightFace's IJB evaluation) reads the TPR at the ROC point whose FPR is *nearest* the
target, on scikit-learn's ``roc_curve`` with its default ``drop_intermediate`` (collinear points
removed), the first such point on a tie; its FPR may lie above the target. The strict rule reads
the best TPR at an FPR at or below the target on the full ROC (the highest threshold giving it),
and that threshold.

**1:N** (probes searched against a gallery, similarity = dot product of template features):
CMC rank-k is the share of mated probes (their subject is in the gallery) whose mated gallery
template (the first one of their subject) ranks among the top k. TPIR at FPIR f: a threshold is
the ``max(int(f * U) - 1, 0)``-th largest of the U non-mated probes' best scores; a mated probe
counts when its mated score beats every non-mated gallery template and the threshold.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RANKS = (1, 5, 10)
FPIRS = (0.01, 0.1)


def _dense(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values among ``values`` < ``size``, sorted; each value's index among them),
    without sorting: a presence mask and its running count."""
    present = np.zeros(size, bool)
    present[values] = True
    return np.flatnonzero(present), (np.cumsum(present) - 1)[values]


def pair_scores(features: np.ndarray, first: np.ndarray, second: np.ndarray, block: int = 1024) -> np.ndarray:
    """Dot products ``features[first[i]] . features[second[i]]`` of P pairs of rows, float64.

    Pairs are bucketed by their first row (``block`` rows per bucket, an O(P) radix sort); per
    bucket one matrix product of its first rows against the second rows they meet, so the cost
    is a few GEMMs, never P gathered vectors.
    """
    features = np.asarray(features, np.float64)
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    size = len(features)
    buckets = -(-size // block)
    key = first // block
    order = np.argsort(key.astype(np.uint16) if buckets <= 1 << 16 else key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(buckets + 1))
    del key
    scores = np.empty(len(first), np.float64)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if start == stop:
            continue
        rows = order[start:stop]
        left, left_index = _dense(first[rows], size)
        right, right_index = _dense(second[rows], size)
        scores[rows] = (features[left] @ features[right].T)[left_index, right_index]
    return scores


class ROC(NamedTuple):
    """False and true positive rates at each decreasing ``thresholds`` (accept: score >= threshold);
    the first point is (0, 0) at threshold +inf."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def _counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accepted genuine and impostor counts at each distinct score, highest score first."""
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores)  # the order within a run of equal scores does not matter: runs are summed
    ranked = scores[order]
    ends = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1]  # last index of each score
    hits = np.cumsum(np.asarray(labels, bool)[order], dtype=np.int64)[ends]
    return hits, ends + 1 - hits, ranked[ends]


def _corners(hits: np.ndarray, false: np.ndarray) -> np.ndarray:
    """Mask of the points not lying on a straight segment between their neighbours."""
    if hits.size <= 2:
        return np.ones(hits.size, bool)
    return np.r_[True, (np.diff(false, 2) != 0) | (np.diff(hits, 2) != 0), True]


def _curve(hits: np.ndarray, false: np.ndarray, thresholds: np.ndarray) -> ROC:
    hits, false = np.r_[0, hits], np.r_[0, false]
    return ROC(false / max(false[-1], 1), hits / max(hits[-1], 1), np.r_[np.inf, thresholds])


def roc(scores: np.ndarray, labels: np.ndarray, drop_intermediate: bool = False) -> ROC:
    """The ROC of ``scores`` (higher = same) for boolean ``labels``; with ``drop_intermediate``
    the points lying on a straight segment between their neighbours are removed (as
    scikit-learn's ``roc_curve`` does by default)."""
    hits, false, thresholds = _counts(scores, labels)
    keep = _corners(hits, false) if drop_intermediate else slice(None)
    return _curve(hits[keep], false[keep], thresholds[keep])


class TarAtFar(NamedTuple):
    """Per target FAR: the reference (nearest-FAR) TAR and its FAR, the strict TAR (FAR <= target),
    its FAR and the score threshold giving it."""

    fars: tuple[float, ...]
    nearest_tar: np.ndarray
    nearest_far: np.ndarray
    strict_tar: np.ndarray
    strict_far: np.ndarray
    strict_threshold: np.ndarray


def nearest_far_index(fpr: np.ndarray, target: float) -> int:
    """Index of the ROC point whose FPR is nearest ``target`` (the first on a tie)."""
    return int(np.argmin(np.abs(fpr - target)))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, fars: Sequence[float] = FARS) -> tuple[TarAtFar, ROC]:
    """TAR at each FAR by both rules (see the module docstring), and the full ROC."""
    hits, false, thresholds = _counts(scores, labels)
    full = _curve(hits, false, thresholds)
    keep = _corners(hits, false)
    reduced = _curve(hits[keep], false[keep], thresholds[keep])
    nearest = [nearest_far_index(reduced.fpr, far) for far in fars]
    last = [int(np.searchsorted(full.fpr, far, side="right")) - 1 for far in fars]  # fpr is non-decreasing
    strict = [int(np.searchsorted(full.tpr, full.tpr[k], side="left")) for k in last]  # same TAR, lowest FAR
    return TarAtFar(tuple(fars), reduced.tpr[nearest], reduced.fpr[nearest], full.tpr[strict], full.fpr[strict],
                    full.thresholds[strict]), full


class Identification(NamedTuple):
    """1:N results of one gallery: CMC at ``ranks``, TPIR and its threshold at ``fpirs``, counts."""

    ranks: tuple[int, ...]
    cmc: np.ndarray
    fpirs: tuple[float, ...]
    tpir: np.ndarray
    tpir_thresholds: np.ndarray
    mated: int
    non_mated: int


def identification(probe_features: np.ndarray, probe_subjects: np.ndarray, gallery_features: np.ndarray,
                   gallery_subjects: np.ndarray, ranks: Sequence[int] = RANKS, fpirs: Sequence[float] = FPIRS,
                   chunk: int = 4096) -> Identification:
    """CMC and TPIR at FPIR of probes (P, D) against a gallery (G, D), in chunks of probes."""
    gallery_features = np.asarray(gallery_features, np.float64)
    gallery_subjects = np.asarray(gallery_subjects)
    first_of = {}
    for index, subject in enumerate(gallery_subjects.tolist()):
        first_of.setdefault(subject, index)
    mated_index = np.array([first_of.get(s, -1) for s in np.asarray(probe_subjects).tolist()], np.int64)
    rank_of, mated_correct, mated_score, best_non_mated = [], [], [], []
    for start in range(0, len(mated_index), chunk):
        similarity = np.asarray(probe_features[start:start + chunk], np.float64) @ gallery_features.T
        index = mated_index[start:start + chunk]
        mated = index >= 0
        scores = similarity[mated, index[mated]]
        rank_of.append(1 + (similarity[mated] > scores[:, None]).sum(1))
        others = np.where(gallery_subjects[None, :] == np.asarray(probe_subjects[start:start + chunk])[mated, None],
                          -np.inf, similarity[mated])
        mated_correct.append(scores > others.max(1, initial=-np.inf))
        mated_score.append(scores)
        best_non_mated.append(similarity[~mated].max(1, initial=-np.inf))
    rank_of, mated_correct, mated_score, best_non_mated = (
        np.concatenate(x) for x in (rank_of, mated_correct, mated_score, best_non_mated))
    cmc = np.array([np.mean(rank_of <= k) if rank_of.size else np.nan for k in ranks])
    ordered = np.sort(best_non_mated)[::-1]
    thresholds = np.array([ordered[max(int(ordered.size * f) - 1, 0)] if ordered.size else np.nan for f in fpirs])
    tpir = np.array([np.mean(mated_correct & (mated_score > t)) if mated_score.size and np.isfinite(t) else np.nan
                     for t in thresholds])
    return Identification(tuple(ranks), cmc, tuple(fpirs), tpir, thresholds, int(mated_score.size),
                          int(best_non_mated.size))
