"""Seeded synthetic galleries with face-like structure, for tests and ``bench/search_scale.py``.

Identities sit in clusters (people who look alike: cosine ~0.36 within a cluster, ~0 across), and a
query is a noisy photo of one identity (cosine ~0.7 with it), so the nearest neighbour is
well defined but a uniform-sphere shortcut does not apply.
"""
from __future__ import annotations

import numpy as np

CLUSTER_SHARE, QUERY_SHARE = 0.6, 0.7


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _mix(rng: np.random.Generator, base: np.ndarray, share: float) -> np.ndarray:
    noise = _unit(rng.standard_normal(base.shape, dtype=np.float32))
    return _unit(share * base + np.sqrt(1 - share ** 2) * noise).astype(np.float32)


def gallery(count: int, dim: int = 512, seed: int = 0, per_cluster: int = 100, chunk: int = 100_000
            ) -> np.ndarray:
    """(count, dim) float32 unit identity templates in clusters of ``per_cluster``."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(count // per_cluster, 1), dim), dtype=np.float32))
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, chunk):
        rows = np.arange(start, min(start + chunk, count))
        out[rows] = _mix(rng, centres[rows % len(centres)], CLUSTER_SHARE)
    return out


def queries(templates: np.ndarray, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(count, dim) noisy photos of randomly chosen identities, and those identities' rows."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(len(templates), count, replace=len(templates) < count)
    return _mix(rng, np.asarray(templates[truth]), QUERY_SHARE), truth
