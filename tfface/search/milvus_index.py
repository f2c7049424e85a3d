"""Milvus through pymilvus (the ``milvus`` extra): a server (``milvus://HOST:PORT``) or a local
milvus-lite file (``PATH.db``). One collection per model fingerprint and bank
(``tfface_<fingerprint>_<bank>``), so banks of two models never mix; exact inner-product search
(``FLAT``, the same answers as FAISS Flat), ids are the facebank's row ids.
"""
from __future__ import annotations

import os
import re

import numpy as np

from tfface.core.errors import UserError
from tfface.search.index import VectorIndex, as_queries, padded

BATCH = 2_000
TIMEOUT_S = 5.0


def collection_name(fingerprint: str, bank_id: str) -> str:
    """``tfface_<fingerprint[:16]>_<bank_id[:12]>`` with anything but [A-Za-z0-9_] replaced."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"tfface_{fingerprint[:16]}_{bank_id[:12]}")


class MilvusIndex(VectorIndex):
    """A Milvus collection as a :class:`VectorIndex`."""

    def __init__(self, spec: str, dim: int, fingerprint: str, bank_id: str):
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise UserError(f"--index {spec}: Milvus needs the milvus extra (pip install 'tfface[milvus]')") from None
        self.spec, self.dim, self.name = spec, dim, collection_name(fingerprint, bank_id)
        if spec.startswith("milvus://"):
            uri = "http://" + spec[len("milvus://"):]
        else:
            os.makedirs(os.path.dirname(os.path.abspath(spec)), exist_ok=True)
            uri = os.path.abspath(spec)
        try:
            self.client = MilvusClient(uri=uri, timeout=TIMEOUT_S)
            if not self.client.has_collection(self.name):
                self._create()
        except UserError:
            raise
        except Exception as err:  # pymilvus raises its own and gRPC errors: one line for all
            raise UserError(f"--index {spec}: cannot use Milvus ({str(err).splitlines()[0][:200]})") from None

    def _create(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self.client.prepare_index_params()
        params.add_index("vector", index_type="FLAT", metric_type="IP")
        self.client.create_collection(self.name, schema=schema, index_params=params, consistency_level="Strong")

    def __len__(self) -> int:
        return int(self.client.query(self.name, output_fields=["count(*)"])[0]["count(*)"])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        for start in range(0, len(ids), BATCH):
            chunk = np.asarray(vectors[start:start + BATCH], np.float32)
            self.client.upsert(self.name, [{"id": int(i), "vector": v} for i, v in
                                           zip(ids[start:start + BATCH], chunk.tolist())])

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, np.int64)]
        for start in range(0, len(ids), BATCH):
            self.client.delete(self.name, ids=ids[start:start + BATCH])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_queries(queries, self.dim)
        scores, ids = [], []
        for start in range(0, len(queries), BATCH):
            hits = self.client.search(self.name, data=queries[start:start + BATCH].tolist(), limit=k,
                                      search_params={"metric_type": "IP"}, output_fields=[])
            for row in hits:
                scores.append(np.array([h["distance"] for h in row], np.float32))
                ids.append(np.array([h["id"] for h in row], np.int64))
        return padded(scores, ids, k)

    def clear(self) -> None:
        self.client.drop_collection(self.name)
        self._create()

    def close(self) -> None:
        """Closes the connection (a milvus-lite file's server stops with its last client)."""
        self.client.close()
