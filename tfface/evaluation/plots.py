"""ROC curve (AUC, EER marked) and same/different distance histograms with the chosen threshold;
ROC curves on a log FAR axis (IJB)."""
from __future__ import annotations

import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfface.evaluation.verification import VerificationResult  # noqa: E402


def plot_roc(path: str, results: Mapping[str, VerificationResult], distance_metric: int = 0) -> None:
    """Writes a PNG: one row per set, its ROC (left) and distance histograms (right).

    The ROC is the mean over the folds (as facenet's AUC/EER); the histograms show every pair's
    held-out distance with the cross-validated threshold as a vertical line.
    """
    metric = "squared L2 distance" if distance_metric == 0 else "angular distance / pi"
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4.2 * len(results)), squeeze=False)
    for (name, result), (roc_ax, hist_ax) in zip(results.items(), axes):
        accuracy = np.mean(result.accuracy)
        roc_ax.plot(result.fpr, result.tpr, lw=2, label=f"AUC {result.auc:.4f}")
        if np.isfinite(result.eer):
            roc_ax.plot([result.eer], [1 - result.eer], "o", color="C3", label=f"EER {result.eer:.4f}")
        roc_ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
        roc_ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false accept rate", ylabel="true accept rate",
                   title=f"{name}: ROC ({result.issame.size} pairs, accuracy {accuracy:.4f})")
        roc_ax.legend(loc="lower right")
        bins = np.linspace(0, max(float(result.distances.max()), result.threshold) * 1.05 + 1e-9, 40)
        hist_ax.hist(result.distances[result.issame], bins, alpha=0.6, color="C2", label="same person")
        hist_ax.hist(result.distances[~result.issame], bins, alpha=0.6, color="C1", label="different people")
        hist_ax.axvline(result.threshold, color="k", ls="--", label=f"threshold {result.threshold:.3f}")
        hist_ax.set(xlabel=metric, ylabel="pairs", title=f"{name}: distances")
        hist_ax.legend()
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    """Writes ``fig`` as a PNG atomically (tmp + rename) and closes it."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def plot_far_roc(path: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """Writes a PNG of ROC curves (name -> (FAR, TAR)) on a logarithmic FAR axis, as IJB
    results are drawn."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, (far, tar) in curves.items():
        positive = far > 0
        ax.semilogx(far[positive], tar[positive], lw=1.5, label=name)
    ax.set(xlim=(1e-6, 1), ylim=(0, 1.01), xlabel="false accept rate", ylabel="true accept rate", title=title)
    ax.grid(True, which="major", ls=":", alpha=0.6)
    ax.legend(loc="lower right")
    save_figure(fig, path)
