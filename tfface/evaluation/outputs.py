"""Verification results as JSON other tools can read: every number, per fold, ROC and distances."""
from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from tfface.evaluation.verification import VerificationResult


def _number(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)  # JSON has no NaN


def result_dict(result: VerificationResult) -> dict:
    """Everything :func:`tfface.evaluation.evaluate` measured, as plain JSON types."""
    return {
        "num_pairs": int(result.issame.size),
        "accuracy": float(np.mean(result.accuracy)),
        "accuracy_std": float(np.std(result.accuracy)),
        "threshold": result.threshold,
        "val": result.val,
        "val_std": result.val_std,
        "far": result.far,
        "auc": _number(result.auc),
        "eer": _number(result.eer),
        "folds": [
            {"accuracy": float(acc), "threshold": float(thr), "val": float(val), "far": float(far)}
            for acc, thr, val, far in zip(result.accuracy, result.thresholds, result.fold_val, result.fold_far)
        ],
        "roc": {"thresholds": result.roc_thresholds.round(4).tolist(), "fpr": result.fpr.tolist(), "tpr": result.tpr.tolist()},
        "pairs": {"distance": result.distances.tolist(), "issame": result.issame.tolist()},
    }


def report(model: str, fingerprint: str | None, settings: Mapping, results: Mapping[str, VerificationResult]) -> dict:
    """One JSON document for a run over one or more sets (``results``: set name -> result)."""
    return {
        "model": model,
        "fingerprint": fingerprint,
        "settings": dict(settings),
        "results": {name: result_dict(result) for name, result in results.items()},
    }


def write_json(path: str, data: Mapping) -> None:
    """Writes ``data`` to ``path`` atomically (tmp + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def write_outputs(
    output_json: str,
    roc_plot: str,
    model: str,
    fingerprint: str | None,
    settings: Mapping,
    results: Mapping[str, VerificationResult],
) -> list[str]:
    """Writes the JSON report and/or the ROC plot when their paths are given; returns the lines
    saying where they went."""
    lines = []
    if output_json:
        write_json(output_json, report(model, fingerprint, settings, results))
        lines.append(f"Results written to {output_json}")
    if roc_plot:
        from tfface.evaluation.plots import plot_roc  # matplotlib only when a plot is asked for

        plot_roc(roc_plot, results, int(settings.get("distance_metric", 0)))
        lines.append(f"ROC plot written to {roc_plot}")
    return lines
