"""Evaluation: facenet-compatible verification metrics, LFW pairs, embedding extraction."""
from tfface.evaluation.embeddings import embed_paths, load_image
from tfface.evaluation.lfw import evaluate_pairs
from tfface.evaluation.pairs import get_paths, read_pairs
from tfface.evaluation.verification import VerificationResult, distance, evaluate

__all__ = ["VerificationResult", "distance", "embed_paths", "evaluate", "evaluate_pairs", "get_paths", "load_image", "read_pairs"]
