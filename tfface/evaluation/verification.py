"""Face verification metrics with facenet's exact 10-fold protocol.

Pairs are interleaved in ``embeddings``: rows (0, 1), (2, 3), ... For every fold the
threshold with the best accuracy on the other folds is applied to the held-out fold (LFW's
View 2 protocol). The VAL@FAR threshold is interpolated on the training folds as facenet
does. ``distance_metric`` 0 = squared Euclidean, 1 = angular (arccos(cosine) / pi).

facenet's threshold grids stop at 4, the largest squared distance of unit vectors. Embeddings
of other norms (facenet's own ``use_flipped_images`` concatenates two unit vectors: distances up
to 8) would leave the ROC truncated, its AUC too low and its EER undefined, so the grids are
extended, in the same steps, past the largest distance measured; below 4 they are facenet's.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import interpolate, optimize
from sklearn import metrics
from sklearn.model_selection import KFold

from tfface.core.errors import UserError

ROC_STEP, VAL_STEP = 0.01, 0.001


def threshold_grid(step: float, largest_distance: float) -> np.ndarray:
    """facenet's ``np.arange(0, 4, step)``, extended past ``largest_distance`` when it is >= 4."""
    return np.arange(0, max(4.0, largest_distance + 2 * step), step)


@dataclasses.dataclass
class VerificationResult:
    """What :func:`evaluate` measured; per-fold arrays have one value per fold."""

    accuracy: np.ndarray  # per fold
    tpr: np.ndarray  # mean over folds, per ROC threshold
    fpr: np.ndarray
    val: float
    val_std: float
    far: float
    auc: float
    eer: float
    thresholds: np.ndarray  # best threshold of each fold
    roc_thresholds: np.ndarray  # the thresholds of ``tpr`` and ``fpr``
    fold_val: np.ndarray  # validation rate (TAR) of each fold at its FAR-target threshold
    fold_far: np.ndarray  # false accept rate of each fold at that threshold
    distances: np.ndarray  # (N,) each pair's distance as its test fold measured it
    issame: np.ndarray  # (N,)

    @property
    def threshold(self) -> float:
        return float(np.mean(self.thresholds))

    def summary_lines(self) -> list[str]:
        """facenet's output lines (people grep for these)."""
        return [
            f"Accuracy: {np.mean(self.accuracy):.5f}+-{np.std(self.accuracy):.5f}",
            f"Validation rate: {self.val:.5f}+-{self.val_std:.5f} @ FAR={self.far:.5f}",
            f"Area Under Curve (AUC): {self.auc:1.3f}",
            f"Equal Error Rate (EER): {self.eer:1.3f}",
        ]

    def fold_table(self) -> list[str]:
        """One line per fold: accuracy, best threshold, validation rate and FAR."""
        lines = ["fold  accuracy  threshold  val      far"]
        for i, (acc, thr, val, far) in enumerate(zip(self.accuracy, self.thresholds, self.fold_val, self.fold_far)):
            lines.append(f"{i + 1:>4}  {acc:.5f}   {thr:.5f}    {val:.5f}  {far:.5f}")
        return lines


def distance(embeddings1: np.ndarray, embeddings2: np.ndarray, distance_metric: int = 0) -> np.ndarray:
    """Row-wise distance: 0 = squared Euclidean, 1 = arccos(cosine similarity) / pi."""
    if distance_metric == 0:
        return np.sum(np.square(embeddings1 - embeddings2), axis=1)
    if distance_metric == 1:
        dot = np.sum(embeddings1 * embeddings2, axis=1)
        norm = np.linalg.norm(embeddings1, axis=1) * np.linalg.norm(embeddings2, axis=1)
        return np.arccos(np.clip(dot / norm, -1.0, 1.0)) / np.pi
    raise UserError(f"distance_metric: expected 0 (euclidean) or 1 (cosine), got {distance_metric!r}")


def _rates(thresholds, dist: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tpr, fpr, accuracy) of predicting 'same' when ``dist < t``, for every threshold t (facenet's
    VAL and FAR are the tpr and fpr).

    Counted on sorted distances (a binary search per threshold), so fine threshold grids over
    large, unnormalised distances stay cheap; the counts equal a comparison per pair.
    """
    thresholds = np.asarray(thresholds, np.float64)
    same, diff = np.sort(dist[issame]), np.sort(dist[~issame])
    tp = np.searchsorted(same, thresholds, side="left")  # same-person pairs with dist < t
    fp = np.searchsorted(diff, thresholds, side="left")
    tn = diff.size - fp
    tpr = tp / same.size if same.size else np.zeros(thresholds.shape)
    fpr = fp / diff.size if diff.size else np.zeros(thresholds.shape)
    return tpr, fpr, (tp + tn) / dist.size


def _fold_distances(emb1, emb2, train, test, distance_metric, subtract_mean):
    mean = np.mean(np.concatenate([emb1[train], emb2[train]]), axis=0) if subtract_mean else 0.0
    return distance(emb1 - mean, emb2 - mean, distance_metric)


def evaluate(
    embeddings: np.ndarray,
    actual_issame,
    nrof_folds: int = 10,
    distance_metric: int = 0,
    subtract_mean: bool = False,
    far_target: float = 1e-3,
    fold_ids=None,
) -> VerificationResult:
    """10-fold verification of interleaved pair ``embeddings`` (2N, D) against ``actual_issame`` (N,).

    ``fold_ids`` (N,) puts pair i in fold ``fold_ids[i]`` (e.g. YTF's splits) instead of facenet's
    ``nrof_folds`` consecutive blocks.
    """
    embeddings = np.asarray(embeddings, np.float64)
    issame = np.asarray(actual_issame, bool)
    if embeddings.ndim != 2 or embeddings.shape[0] != 2 * issame.shape[0]:
        raise ValueError(
            f"embeddings: expected shape (2N, D) with N={issame.shape[0]} pairs, got {embeddings.shape}"
        )
    emb1, emb2 = embeddings[0::2], embeddings[1::2]
    folds = _folds(issame.shape[0], nrof_folds, fold_ids)
    nrof_folds = len(folds)

    fold_distances = [_fold_distances(emb1, emb2, train, test, distance_metric, subtract_mean) for train, test in folds]
    largest = max(float(np.max(dist)) for dist in fold_distances)
    roc_thresholds, val_thresholds = threshold_grid(ROC_STEP, largest), threshold_grid(VAL_STEP, largest)
    tprs = np.zeros((nrof_folds, roc_thresholds.size))
    fprs = np.zeros((nrof_folds, roc_thresholds.size))
    accuracy = np.zeros(nrof_folds)
    best = np.zeros(nrof_folds)
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    distances = np.zeros(issame.shape[0])
    for i, ((train, test), dist) in enumerate(zip(folds, fold_distances)):
        distances[test] = dist[test]
        train_acc = _rates(roc_thresholds, dist[train], issame[train])[2]
        best[i] = roc_thresholds[int(np.argmax(train_acc))]
        tprs[i], fprs[i], _ = _rates(roc_thresholds, dist[test], issame[test])
        accuracy[i] = _rates(best[i], dist[test], issame[test])[2]

        far_train = _rates(val_thresholds, dist[train], issame[train])[1]
        threshold = _threshold_at_far(far_train, far_target, val_thresholds)
        val[i], far[i], _ = _rates(threshold, dist[test], issame[test])

    tpr, fpr = np.mean(tprs, axis=0), np.mean(fprs, axis=0)
    return VerificationResult(
        accuracy=accuracy,
        tpr=tpr,
        fpr=fpr,
        val=float(np.mean(val)),
        val_std=float(np.std(val)),
        far=float(np.mean(far)),
        auc=float(metrics.auc(fpr, tpr)),
        eer=_eer(fpr, tpr),
        thresholds=best,
        roc_thresholds=roc_thresholds,
        fold_val=val,
        fold_far=far,
        distances=distances,
        issame=issame,
    )


def _folds(num_pairs: int, nrof_folds: int, fold_ids) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) pair indices of every fold."""
    if fold_ids is None:
        if num_pairs < nrof_folds:
            raise UserError(f"nrof_folds={nrof_folds} needs at least as many pairs, got {num_pairs}")
        return list(KFold(n_splits=nrof_folds, shuffle=False).split(np.arange(num_pairs)))
    fold_ids = np.asarray(fold_ids)
    if fold_ids.shape != (num_pairs,):
        raise ValueError(f"fold_ids: expected shape ({num_pairs},), got {fold_ids.shape}")
    names = np.unique(fold_ids)
    if names.size < 2:
        raise UserError(f"folds: cross-validation needs at least 2 folds, got {names.size}")
    return [(np.flatnonzero(fold_ids != f), np.flatnonzero(fold_ids == f)) for f in names]


def _threshold_at_far(far_train: np.ndarray, far_target: float, thresholds: np.ndarray) -> float:
    """Linear interpolation of threshold as a function of FAR at ``far_target`` (facenet's
    ``interp1d(far, thresholds, 'slinear')``); 0 when the target FAR is never reached.

    FAR is a non-decreasing step function of the threshold, so many thresholds share one FAR;
    each FAR value keeps its smallest threshold (current SciPy refuses duplicate x values).
    """
    if np.max(far_train) < far_target:
        return 0.0
    far_values, first = np.unique(far_train, return_index=True)
    return float(np.interp(far_target, far_values, thresholds[first]))


def _eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Equal error rate: where 1 - tpr == fpr on the mean ROC (facenet's brentq root)."""
    try:
        roc = interpolate.interp1d(fpr, tpr)
        return float(optimize.brentq(lambda x: 1.0 - x - roc(x), 0.0, 1.0))
    except ValueError:  # degenerate ROC (e.g. a perfect separation with duplicated fpr)
        return float("nan")
