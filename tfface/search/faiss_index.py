"""FAISS in process: exact inner-product search (``IDMap2,Flat``) below :data:`EXACT_LIMIT` rows,
above it an inverted file with 4-bit product-quantiser codes scanned by SIMD (``IVF<nlist>,
PQ<dim/4>x4fs``: dim/8 bytes a vector, 1/32 of float32), of which :data:`NPROBE_SHARE` of the
lists are searched; trained on the rows it is built from and rebuilt when they grow past twice
that (its design size). Removing rows scans the lists' ids (milliseconds at 1M rows). The choice
and the defaults come from ``bench/search_scale.py`` (docs/search.md).

A saved index is one file: a JSON header line (format, model fingerprint, factory, design size) and FAISS's own serialisation; :meth:`FaissIndex.from_bytes` refuses another
model's index before parsing FAISS bytes.
"""
from __future__ import annotations

import json
import math

import faiss
import numpy as np

from tfface.core.errors import UserError
from tfface.search.index import VectorIndex, as_queries

EXACT_LIMIT = 50_000
GROWTH = 2
NPROBE_SHARE = 0.375
FORMAT = "tfface-faiss-index"
TRAIN_PER_LIST = 64
CHUNK = 65_536


def approximate_factory(design_size: int, dim: int) -> str:
    """``IVF<nlist>,PQ<dim/4>x4fs`` (``SQ8`` where dim is not a multiple of 8) with ``nlist`` the
    power of two nearest below sqrt(design size)."""
    nlist = 2 ** int(math.log2(max(math.sqrt(design_size), 64)))
    return f"IVF{nlist}," + (f"PQ{dim // 4}x4fs" if dim % 8 == 0 else "SQ8")


class FaissIndex(VectorIndex):
    """A FAISS index over int64 ids; ``factory`` None picks by size (see the module docstring)."""

    def __init__(self, dim: int, factory: str | None = None, nprobe: int | None = None):
        self.dim, self.spec, self.nprobe, self.auto = dim, "faiss", nprobe, factory is None
        self.factory = factory or "Flat"
        self.design_size = EXACT_LIMIT if self.auto else 0
        self.index = self._new(self.factory)

    def _new(self, factory: str) -> faiss.Index:
        inner = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        return inner if factory.startswith("IVF") else faiss.IndexIDMap2(inner)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def wants_rebuild(self, rows: int) -> bool:
        """Whether holding ``rows`` rows asks for a rebuild (automatic mode, past the design size)."""
        return self.auto and rows > self.design_size

    def clear(self) -> None:
        self.index = self._new(self.factory)

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Chooses (automatic mode), trains and fills the index from the full set of rows."""
        if self.auto:
            if len(ids) < EXACT_LIMIT:
                self.factory, self.design_size = "Flat", EXACT_LIMIT
            else:
                self.design_size = GROWTH * len(ids)
                self.factory = approximate_factory(self.design_size, self.dim)
        self.index = self._new(self.factory)
        if not self.index.is_trained:
            self._train(vectors)
        self.add(ids, vectors)

    def _train(self, vectors: np.ndarray) -> None:
        ivf = faiss.extract_index_ivf(self.index)
        ivf.cp.max_points_per_centroid, ivf.cp.niter = TRAIN_PER_LIST, 10
        count = min(len(vectors), ivf.nlist * TRAIN_PER_LIST)
        rows = np.sort(np.random.default_rng(0).choice(len(vectors), count, replace=False))
        if count < ivf.nlist:
            raise UserError(f"index: {self.factory} needs at least {ivf.nlist} rows to train, got {len(vectors)}")
        self.index.train(np.ascontiguousarray(vectors[rows], np.float32))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        self.remove(ids)
        for start in range(0, len(ids), CHUNK):
            self.index.add_with_ids(np.ascontiguousarray(vectors[start:start + CHUNK], np.float32),
                                    np.ascontiguousarray(ids[start:start + CHUNK]))

    def remove(self, ids: np.ndarray) -> None:
        if len(self) and len(ids):
            self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, np.int64)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_queries(queries, self.dim)
        if "IVF" in self.factory:
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = self.nprobe or max(1, math.ceil(NPROBE_SHARE * ivf.nlist))
        if "HNSW" in self.factory:
            faiss.downcast_index(self.index.index).hnsw.efSearch = max(self.nprobe or 64, k)
        scores, ids = self.index.search(queries, k)
        scores[ids < 0] = -np.inf
        return scores, ids

    # ------------------------------------------------------------------ files
    def to_bytes(self, fingerprint: str) -> bytes:
        """The index file: a header line binding it to ``fingerprint``, then FAISS bytes."""
        header = {"format": FORMAT, "fingerprint": fingerprint, "dim": self.dim, "factory": self.factory,
                  "auto": self.auto, "design_size": self.design_size, "nprobe": self.nprobe}
        return json.dumps(header).encode() + b"\n" + faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, fingerprint: str, dim: int, where: str) -> "FaissIndex":
        """The index of :meth:`to_bytes`; refuses another model's or a foreign file."""
        line, _, body = data.partition(b"\n")
        try:
            header = json.loads(line)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise UserError(f"index: '{where}' is not a tfface FAISS index")
        if header.get("fingerprint") != fingerprint:
            raise UserError(f"index: '{where}' was built for the model of fingerprint {header.get('fingerprint')}, "
                            f"the facebank's is {fingerprint}")
        if header.get("dim") != dim:
            raise UserError(f"index: '{where}' holds vectors of size {header.get('dim')}, the facebank {dim}")
        index = cls(dim, None if header["auto"] else header["factory"], header["nprobe"])
        index.factory, index.design_size = header["factory"], int(header["design_size"])
        try:
            index.index = faiss.deserialize_index(np.frombuffer(body, np.uint8))
        except RuntimeError as err:
            raise UserError(f"index: cannot read '{where}' ({str(err).splitlines()[0]})") from None
        return index
