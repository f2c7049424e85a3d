"""The InsightFace / MultiFace benchmark protocol over ``.bin`` sets: flip TTA, 10 folds, a table.

Every set is evaluated with facenet's 10-fold protocol (:func:`tfface.evaluation.evaluate`) on
the flip-TTA embeddings (image + mirror, re-normalised) as InsightFace reports it; the result
without flip is kept too, since single-image uses (compare, classifier, facebank) calibrate
their threshold on those.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from tfface.evaluation.bins import BinSet, find_bins, load_bin
from tfface.evaluation.embeddings import EmbedFn, embed_images, flip_sum
from tfface.evaluation.verification import VerificationResult, evaluate

Evaluator = Callable[[object, int], dict]


@dataclasses.dataclass
class BenchmarkResult:
    """One set's result: ``result`` as reported (with flip TTA when asked), ``plain`` without."""

    name: str
    result: VerificationResult
    plain: VerificationResult
    flip: bool
    skipped_pairs: int


def evaluate_bin(
    embed: EmbedFn,
    bin_set: BinSet,
    batch_size: int = 100,
    flip: bool = True,
    nrof_folds: int = 10,
    distance_metric: int = 0,
    far_target: float = 1e-3,
    progress: bool = False,
) -> BenchmarkResult:
    """Embeds a decoded ``.bin`` (``embed``: uint8 batch -> L2-normalised embeddings) and evaluates it."""
    plain, mirrored = embed_images(embed, bin_set.images, batch_size, flip, progress, desc=bin_set.name)
    plain_result = evaluate(plain, bin_set.issame, nrof_folds, distance_metric, far_target=far_target)
    result = evaluate(flip_sum(plain, mirrored), bin_set.issame, nrof_folds, distance_metric, far_target=far_target) \
        if flip else plain_result
    return BenchmarkResult(bin_set.name, result, plain_result, flip, bin_set.skipped_pairs)


def evaluate_bins(
    embed: EmbedFn,
    bins_dir: str,
    targets: Sequence[str],
    image_size: Sequence[int],
    batch_size: int = 100,
    flip: bool = True,
    nrof_folds: int = 10,
    distance_metric: int = 0,
    far_target: float = 1e-3,
    progress: bool = False,
) -> dict[str, BenchmarkResult]:
    """:func:`evaluate_bin` over ``<bins_dir>/<target>.bin`` for every target."""
    return {
        target: evaluate_bin(embed, load_bin(path, image_size, progress), batch_size, flip, nrof_folds, distance_metric,
                             far_target, progress)
        for target, path in zip(targets, find_bins(bins_dir, targets))
    }


def table(results: Mapping[str, BenchmarkResult]) -> list[str]:
    """The MultiFace-style table (one row per set) followed by InsightFace's grep-able lines."""
    lines = [f"{'set':<10} {'pairs':>6}  {'accuracy':<17}  {'threshold':>9}  {'VAL@FAR':<17}  {'AUC':>6}  {'EER':>6}"]
    for name, bench in results.items():
        r = bench.result
        lines.append(
            f"{name:<10} {r.issame.size:>6}  {np.mean(r.accuracy):.5f}+-{np.std(r.accuracy):.5f}  {r.threshold:>9.5f}  "
            f"{r.val:.5f}@{r.far:.5f}  {r.auc:>6.4f}  {r.eer:>6.4f}"
        )
    for name, bench in results.items():
        label = "Accuracy-Flip" if bench.flip else "Accuracy"
        lines.append(f"[{name}]{label}: {np.mean(bench.result.accuracy):1.5f}+-{np.std(bench.result.accuracy):1.5f}")
        if bench.skipped_pairs:
            lines.append(f"[{name}]skipped {bench.skipped_pairs} pair(s) with an undecodable image")
    return lines


def bins_evaluator(
    bins_dir: str, targets: Sequence[str], image_size: Sequence[int], batch_size: int = 100, flip: bool = True
) -> Evaluator:
    """An after-epoch evaluation for the trainer: the sets are decoded once, then every call
    embeds them with the Keras embedder, prints the table and returns ``{"<set>/accuracy": ...}``
    (written as TensorBoard scalars by the trainer)."""
    import tensorflow as tf

    sets = [load_bin(path, image_size) for path in find_bins(bins_dir, targets)]

    def evaluate_epoch(embedder, epoch: int) -> dict:
        def embed(images: np.ndarray) -> np.ndarray:
            return tf.math.l2_normalize(embedder(images.astype("float32"), training=False), 1).numpy()

        results = {s.name: evaluate_bin(embed, s, batch_size, flip) for s in sets}
        print(f"Epoch {epoch + 1} evaluation on {', '.join(results)}:", *table(results), sep="\n", flush=True)
        metrics = {}
        for name, bench in results.items():
            metrics[f"{name}/accuracy"] = float(np.mean(bench.result.accuracy))
            metrics[f"{name}/accuracy_std"] = float(np.std(bench.result.accuracy))
            metrics[f"{name}/auc"] = bench.result.auc
        return metrics

    return evaluate_epoch


def chain(*evaluators: Evaluator | None) -> Evaluator | None:
    """One evaluator running every non-None evaluator and merging their metrics (None if none)."""
    active = [e for e in evaluators if e is not None]
    if not active:
        return None

    def evaluate_epoch(embedder, epoch: int) -> dict:
        metrics = {}
        for evaluator in active:
            metrics.update(evaluator(embedder, epoch))
        return metrics

    return evaluate_epoch
