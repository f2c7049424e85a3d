"""Calibrated verification thresholds stored next to the exported model they belong to.

``<export>/<name>/<version>/threshold.json``::

    {"distance_metric": 0, "value": 1.12, "far": 0.001, "tar": 0.97, "calibrated_on": "lfw.bin",
     "num_pairs": 6000, "fingerprint": "..."}

``distance_metric`` 0 is the squared Euclidean distance of L2-normalised embeddings, 1 the
angle / pi (facenet's); two faces are the same person when ``distance <= value``. ``far`` and
``tar`` are the rates that value gives on the calibration pairs. A threshold only means
something for the model whose embeddings it was measured on: :func:`load_threshold` refuses
one whose fingerprint differs from the model's.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from tfface.core.errors import UserError
from tfface.evaluation.verification import VerificationResult

THRESHOLD_FILE = "threshold.json"


@dataclasses.dataclass
class Threshold:
    """A distance threshold and what it gives on the data it was calibrated on."""

    distance_metric: int
    value: float
    far: float
    tar: float
    calibrated_on: str
    num_pairs: int
    fingerprint: str

    def is_same(self, distances: np.ndarray) -> np.ndarray:
        """Same person when ``distance <= value``."""
        return np.asarray(distances) <= self.value


def calibrate(result: VerificationResult, distance_metric: int, calibrated_on: str, fingerprint: str) -> Threshold:
    """The cross-validated best-accuracy threshold of ``result`` (the mean of its folds' best
    thresholds) with the FAR and TAR it gives on all of ``result``'s pairs."""
    value = result.threshold
    same = result.distances <= value
    issame = result.issame
    tar = float(np.mean(same[issame])) if issame.any() else 0.0
    far = float(np.mean(same[~issame])) if (~issame).any() else 0.0
    return Threshold(int(distance_metric), float(value), far, tar, calibrated_on, int(issame.size), fingerprint or "")


def save_threshold(threshold: Threshold, model_dir: str) -> str:
    """Writes ``model_dir/threshold.json`` atomically; returns its path."""
    path = os.path.join(model_dir, THRESHOLD_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(dataclasses.asdict(threshold), f, indent=1)
    os.replace(tmp, path)
    return path


def save_calibrated(
    result: VerificationResult, distance_metric: int, calibrated_on: str, model_dir: str, fingerprint: str | None
) -> str:
    """:func:`calibrate` + :func:`save_threshold`; returns the line saying what was saved where."""
    threshold = calibrate(result, distance_metric, calibrated_on, fingerprint or "")
    path = save_threshold(threshold, model_dir)
    return f"Threshold {threshold.value:.5f} (FAR {threshold.far:.5f}, TAR {threshold.tar:.5f}) saved to {path}"


def load_threshold(model_dir: str, fingerprint: str | None = None) -> Threshold | None:
    """``model_dir/threshold.json``, or None when there is none.

    Raises:
        UserError: the file is malformed, or was calibrated on a model whose fingerprint is not
            ``fingerprint`` (when one is given).
    """
    path = os.path.join(model_dir, THRESHOLD_FILE)
    if not os.path.isfile(path):
        return None
    names = [field.name for field in dataclasses.fields(Threshold)]
    try:
        with open(path) as f:
            data = json.load(f)
        threshold = Threshold(**{name: data[name] for name in names})
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"threshold: '{path}' is not a threshold file with keys {names} ({err})") from None
    if threshold.distance_metric not in (0, 1):
        raise UserError(f"threshold: '{path}' has distance_metric {threshold.distance_metric!r}, expected 0 or 1")
    if fingerprint is not None and threshold.fingerprint != fingerprint:
        raise UserError(
            f"threshold: '{path}' was calibrated on another model (fingerprint {threshold.fingerprint!r}, "
            f"this model's is {fingerprint!r}); calibrate it again with --save_threshold"
        )
    return threshold
