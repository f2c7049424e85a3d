"""Evaluation: facenet-compatible verification metrics, LFW pairs, InsightFace .bin sets, YTF
set-to-set, calibrated thresholds, JSON reports and ROC plots (:mod:`tfface.evaluation.plots`)."""
from tfface.evaluation.benchmarks import evaluate_bin, evaluate_bins
from tfface.evaluation.bins import load_bin, pairs_to_bin, read_bin, write_bin
from tfface.evaluation.embeddings import embed_images, embed_paths, flip_sum, load_image
from tfface.evaluation.lfw import evaluate_pairs
from tfface.evaluation.pairs import get_paths, read_pairs
from tfface.evaluation.sequences import evaluate_sequences, read_splits
from tfface.evaluation.thresholds import Threshold, load_threshold, save_threshold
from tfface.evaluation.verification import VerificationResult, distance, evaluate

__all__ = [
    "Threshold", "VerificationResult", "distance", "embed_images", "embed_paths", "evaluate", "evaluate_bin",
    "evaluate_bins", "evaluate_pairs", "evaluate_sequences", "flip_sum", "get_paths", "load_bin", "load_image",
    "load_threshold", "pairs_to_bin", "read_bin", "read_pairs", "read_splits", "save_threshold", "write_bin",
]
