"""facenet's ``compare``: embed photos, their distance matrix, same/different at a calibrated threshold."""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from tfface.evaluation.thresholds import Threshold
from tfface.evaluation.verification import distance

METRIC_NAMES = {0: "squared L2 distance of normalised embeddings", 1: "angle / pi"}


@dataclasses.dataclass
class Comparison:
    """Distances between the photos in which a face was found (``found``: mask over ``paths``)."""

    paths: list[str]
    found: np.ndarray
    distances: np.ndarray  # (K, K) over the photos with a face, in their order
    distance_metric: int
    threshold: Threshold | None

    @property
    def compared(self) -> list[str]:
        return [p for p, f in zip(self.paths, self.found) if f]

    def lines(self) -> list[str]:
        """What ``compare`` prints: the photos, the distance matrix, then same/different per pair."""
        compared = self.compared
        lines = ["Images:"] + [f"{i}: {p}" for i, p in enumerate(compared)]
        missing = [p for p, f in zip(self.paths, self.found) if not f]
        if missing:
            lines.append(f"No face found in {len(missing)} photo(s): {', '.join(missing)}")
        lines += ["", f"Distance matrix ({METRIC_NAMES[self.distance_metric]})",
                  "    " + "".join(f"{j:>10}" for j in range(len(compared)))]
        lines += [f"{i:<4}" + "".join(f"{d:>10.4f}" for d in row) for i, row in enumerate(self.distances)]
        if self.threshold is None:
            lines.append("No calibrated threshold for this model (run validate_on_lfw or validate_on_bins with "
                         "--save_threshold): distances only")
            return lines
        t = self.threshold
        lines.append(f"Same person when distance <= {t.value:.4f} (calibrated on {t.calibrated_on}, "
                     f"{t.num_pairs} pairs: FAR {t.far:.4f}, TAR {t.tar:.4f})")
        same = self.same()
        for i in range(len(compared)):
            for j in range(i + 1, len(compared)):
                verdict = "same" if same[i, j] else "different"
                lines.append(f"{os.path.basename(compared[i])} vs {os.path.basename(compared[j])}: "
                             f"{self.distances[i, j]:.4f} {verdict}")
        return lines

    def same(self) -> np.ndarray:
        """(K, K) same-person decisions at the threshold (requires one)."""
        return self.threshold.is_same(self.distances)


def compare_embeddings(
    paths: Sequence[str], embeddings: np.ndarray, threshold: Threshold | None = None, distance_metric: int = 0
) -> Comparison:
    """A :class:`Comparison` of ``embeddings`` (rows of NaN = no face in that photo). The
    threshold's metric wins over ``distance_metric``."""
    metric = threshold.distance_metric if threshold is not None else distance_metric
    embeddings = np.asarray(embeddings, np.float64)
    found = ~np.isnan(embeddings).any(axis=1)
    faces = embeddings[found]
    k = len(faces)
    rows, cols = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)
    matrix = distance(faces[rows], faces[cols], metric).reshape(k, k) if k else np.zeros((0, 0))
    np.fill_diagonal(matrix, 0.0)
    return Comparison(list(paths), found, matrix, metric, threshold)

