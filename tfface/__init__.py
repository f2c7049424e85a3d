"""tfface: face recognition in TensorFlow 2 / Keras 3."""
from tfface import data, evaluation, heads, images, losses, models, preprocessing, training
from tfface.export import export_saved_model
from tfface.inference import load_embedder

__version__ = "0.1.0"

__all__ = [
    "data", "evaluation", "export_saved_model", "heads", "images", "load_embedder", "losses", "models", "preprocessing", "training",
]
