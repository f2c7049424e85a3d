"""YouTube Faces-style set-to-set verification (SeqFace reports YTF): a video is its frames.

``frames_dir/<name>/`` holds the (aligned) frames of sequence ``name`` (YTF's
``aligned_images_DB/<person>/<video>/``); a splits file in YTF's ``splits.txt`` format lists
the pairs of sequences, one per line, ``split, first name, second name, ..., is same`` (a header
line is skipped). A sequence's embedding aggregates its frames' L2-normalised embeddings
(:data:`AGGREGATIONS`), then the pairs are scored with facenet's protocol, one fold per split.
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from tfface.data.folders import IMAGE_EXTENSIONS
from tfface.core.errors import UserError, check_file
from tfface.evaluation.embeddings import EmbedFn, embed_paths, l2_normalize
from tfface.evaluation.verification import VerificationResult, evaluate

AGGREGATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda frames: np.mean(frames, axis=0),  # SeqFace / YTF habit
    "median": lambda frames: np.median(frames, axis=0),  # robust to a few bad frames
}


@dataclasses.dataclass(frozen=True)
class SequencePair:
    split: int
    first: str
    second: str
    issame: bool


def read_splits(path: str) -> list[SequencePair]:
    """Pairs of a YTF ``splits.txt``; a clear error for malformed lines or unequal splits."""
    check_file(path, "splits")
    pairs = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            fields = [field.strip() for field in line.split(",")]
            if not line.strip() or (number == 1 and not fields[0].isdigit()):
                continue  # blank line or the header
            if len(fields) < 4 or not fields[0].isdigit() or fields[-1] not in ("0", "1"):
                raise UserError(
                    f"splits: line {number} of '{path}' is not 'split, first name, second name, ..., is same (0/1)'"
                )
            pairs.append(SequencePair(int(fields[0]), fields[1], fields[2], fields[-1] == "1"))
    counts = Counter(p.split for p in pairs)
    if len(counts) < 2:
        raise UserError(f"splits: '{path}' has {len(counts)} split(s); cross-validation needs at least 2")
    if len(set(counts.values())) > 1:
        raise UserError(f"splits: the splits of '{path}' have unequal pair counts {dict(sorted(counts.items()))}")
    return pairs


def sequence_frames(frames_dir: str, names: Sequence[str], frames_per_sequence: int = 0) -> dict[str, list[str]]:
    """Sorted frame paths of every sequence (``frames_per_sequence`` > 0: that many, evenly spaced)."""
    frames, missing = {}, []
    for name in names:
        folder = os.path.join(frames_dir, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)) \
            if os.path.isdir(folder) else []
        if not files:
            missing.append(name)
            continue
        if 0 < frames_per_sequence < len(files):
            files = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, frames_per_sequence).round().astype(int))]
        frames[name] = [os.path.join(folder, f) for f in files]
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise UserError(f"frames_dir: {len(missing)} sequence(s) of the splits file have no frames under '{frames_dir}': {shown}")
    return frames


def _check_aggregation(aggregation: str) -> None:
    if aggregation not in AGGREGATIONS:
        raise UserError(f"aggregation: expected one of {sorted(AGGREGATIONS)}, got {aggregation!r}")


def aggregate(frame_embeddings: np.ndarray, aggregation: str = "mean") -> np.ndarray:
    """One L2-normalised embedding of a sequence from its frames' embeddings (F, D)."""
    _check_aggregation(aggregation)
    pooled = AGGREGATIONS[aggregation](l2_normalize(np.asarray(frame_embeddings, np.float64)))
    return l2_normalize(pooled[None])[0]


def evaluate_sequences(
    embed: EmbedFn,
    frames_dir: str,
    splits_path: str,
    image_size: Sequence[int],
    aggregation: str = "mean",
    frames_per_sequence: int = 0,
    batch_size: int = 100,
    distance_metric: int = 0,
    far_target: float = 1e-3,
    progress: bool = False,
) -> VerificationResult:
    """Set-to-set verification of the sequence pairs of ``splits_path``, one fold per split."""
    _check_aggregation(aggregation)
    pairs = read_splits(splits_path)
    names = sorted({name for p in pairs for name in (p.first, p.second)})
    frames = sequence_frames(frames_dir, names, frames_per_sequence)
    paths = [path for name in names for path in frames[name]]
    embedded = embed_paths(embed, paths, tuple(image_size), batch_size, progress=progress)
    bounds = np.cumsum([0] + [len(frames[name]) for name in names])
    sequence = {name: aggregate(embedded[bounds[i]:bounds[i + 1]], aggregation) for i, name in enumerate(names)}
    embeddings = np.stack([sequence[name] for p in pairs for name in (p.first, p.second)])
    issame = np.array([p.issame for p in pairs])
    return evaluate(embeddings, issame, distance_metric=distance_metric, far_target=far_target,
                    fold_ids=np.array([p.split for p in pairs]))
