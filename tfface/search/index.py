"""The search interface under the facebank: ids (int64) -> L2-normalised vectors, top-k by inner product.

    index = open_index("faiss", dim=512, fingerprint=embedder.fingerprint, bank_id=...)
    index.add(ids, vectors); index.remove(ids)
    scores, ids = index.search(queries, k)      # cosines, best first; id -1 where fewer than k

``open_index`` takes ``faiss`` (in process, the default), ``milvus://HOST:PORT`` (a Milvus server)
or a path ending in ``.db`` (a local milvus-lite file).
"""
from __future__ import annotations

import abc

import numpy as np

from tfface.core.errors import UserError


class VectorIndex(abc.ABC):
    """Top-k inner-product search over vectors keyed by int64 ids."""

    spec: str  # what open_index was given ("faiss", "milvus://...", "x.db")

    @abc.abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Adds (or replaces) the rows ``ids`` (M,) with ``vectors`` (M, D)."""

    @abc.abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Drops the rows ``ids``; unknown ids are ignored."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, k) inner products (descending) and ids of the ``k`` nearest rows; -1 / -inf pad."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of rows."""

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replaces every row by ``ids`` / ``vectors`` (the bank's full state)."""
        self.clear()
        self.add(ids, vectors)

    @abc.abstractmethod
    def clear(self) -> None:
        """Drops every row."""


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """(N, dim) C-contiguous float32, or a one-line error."""
    queries = np.ascontiguousarray(np.asarray(queries, np.float32).reshape(len(queries), -1))
    if queries.shape[1] != dim:
        raise UserError(f"search: queries of size {queries.shape[1]}, the index holds size {dim}")
    return queries


def padded(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacks per-query results of up to ``k`` entries into (N, k) arrays padded with -inf / -1."""
    out_scores = np.full((len(ids), k), -np.inf, np.float32)
    out_ids = np.full((len(ids), k), -1, np.int64)
    for row, (s, i) in enumerate(zip(scores, ids)):
        out_scores[row, :len(s)], out_ids[row, :len(i)] = s, i
    return out_scores, out_ids


def open_index(spec: str | None, dim: int, fingerprint: str, bank_id: str) -> VectorIndex:
    """A new, empty index of ``spec`` (see the module docstring) for ``dim``-d vectors of the model
    ``fingerprint``; a Milvus collection is named after the fingerprint and the bank."""
    spec = spec or "faiss"
    if spec == "faiss":
        from tfface.search.faiss_index import FaissIndex

        return FaissIndex(dim)
    if spec.startswith("milvus://") or spec.endswith(".db"):
        from tfface.search.milvus_index import MilvusIndex

        return MilvusIndex(spec, dim, fingerprint, bank_id)
    raise UserError(f"--index: expected 'faiss', 'milvus://HOST:PORT' or a milvus-lite file ending in .db, got {spec!r}")
