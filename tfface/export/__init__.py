"""Exports for serving: SavedModels in TF Serving's layout (face embedder, or photo -> faces ->
embeddings), warm-up requests, TFLite files, and the checks that they run as TF Serving runs them.

``python -m tfface.export`` (``tfface-export``) is the command line; loading: :mod:`tfface.recognition.inference`.
"""
from tfface.export.saved_model import (
    META_FILE,
    THRESHOLD_FILE,
    embedder_metadata,
    export_saved_model,
    model_fingerprint,
)

__all__ = ["META_FILE", "THRESHOLD_FILE", "embedder_metadata", "export_saved_model", "model_fingerprint"]
