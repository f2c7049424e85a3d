"""tfface: face recognition in TensorFlow 2 / Keras 3."""
from tfface import data, heads, losses, models, preprocessing

__version__ = "0.1.0"

__all__ = ["data", "heads", "losses", "models", "preprocessing"]
