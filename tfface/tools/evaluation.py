"""What the evaluation tools (``validate_on_lfw``, ``validate_on_bins``, ``validate_on_sequences``)
share: the checks of their common flags, loading the model, and writing and printing the results."""
from __future__ import annotations

import os
from typing import Mapping

from tfface.core.errors import UserError, check_positive
from tfface.evaluation.outputs import write_outputs
from tfface.evaluation.verification import VerificationResult
from tfface.recognition.inference import Embedder, load_embedder


def check_settings(batch_size: int, batch_flag: str, nrof_folds: int | None = None, folds_flag: str = "") -> None:
    """A positive batch size and, when the tool has folds, at least two of them."""
    check_positive(batch_size, batch_flag)
    if nrof_folds is not None and nrof_folds < 2:
        raise UserError(f"{folds_flag}: expected at least 2, got {nrof_folds}")


def load_model(model_path: str) -> Embedder:
    """The face embedder to evaluate (a version, model or run directory, or a ``.keras`` file),
    announced with its input size and standardization."""
    if not os.path.exists(model_path):
        raise UserError(f"model: '{model_path}' does not exist")
    embedder = load_embedder(model_path)
    if not isinstance(embedder, Embedder):
        raise UserError(f"model: '{embedder.path}' takes whole photos (exported --with_alignment); evaluate the "
                        f"face embedder export of the same model (exported without --with_alignment)")
    print(f"Model: {embedder.path} ({embedder.image_size[0]}x{embedder.image_size[1]}, {embedder.standardization})")
    return embedder


def report(embedder: Embedder, settings: Mapping, results: Mapping[str, VerificationResult], output_json: str,
           roc_plot: str) -> None:
    """Writes ``--output_json`` / ``--roc_plot`` (when given) and prints where they went."""
    for line in write_outputs(output_json, roc_plot, embedder.path, embedder.fingerprint, settings, results):
        print(line)
