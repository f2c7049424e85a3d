"""A resumable, chunked cache of per-image arrays (embeddings), safe against a killed run.

    <directory>/cache.json          what the rows are (model fingerprint, image list hash, ...)
    <directory>/chunk-000000.npy    rows [0, chunk_size), written atomically (tmp + rename)

A run fills the missing chunks only, so a run killed mid-way restarts where it stopped; a
cache made for other settings (another model, image list or flip setting) is refused with the
differing key named, never mixed in.
"""
from __future__ import annotations

import json
import os

import numpy as np

from tfface.core.errors import UserError

META = "cache.json"


class ChunkCache:
    """``count`` rows in chunks of ``chunk_size``; ``key`` (JSON) says what they are."""

    def __init__(self, directory: str, key: dict, count: int, chunk_size: int):
        self.directory, self.count, self.chunk_size = directory, int(count), int(chunk_size)
        self.key = {**key, "count": self.count, "chunk_size": self.chunk_size}
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, META)
        if os.path.isfile(path):
            with open(path) as f:
                stored = json.load(f)
            differing = sorted(k for k in set(stored) | set(self.key) if stored.get(k) != self.key.get(k))
            if differing:
                raise UserError(f"cache: '{directory}' holds rows made with other settings ({', '.join(differing)} "
                                f"differ); remove it or choose another --cache_dir")
        else:
            _atomic(path, lambda f: f.write(json.dumps(self.key, indent=1).encode()))

    @property
    def num_chunks(self) -> int:
        return -(-self.count // self.chunk_size)

    def bounds(self, index: int) -> tuple[int, int]:
        """Rows [start, stop) of chunk ``index``."""
        return index * self.chunk_size, min((index + 1) * self.chunk_size, self.count)

    def path(self, index: int) -> str:
        return os.path.join(self.directory, f"chunk-{index:06d}.npy")

    def missing(self) -> list[int]:
        """The chunks not written yet."""
        return [i for i in range(self.num_chunks) if not os.path.isfile(self.path(i))]

    def write(self, index: int, rows: np.ndarray) -> None:
        start, stop = self.bounds(index)
        if len(rows) != stop - start:
            raise ValueError(f"chunk {index}: expected {stop - start} rows, got {len(rows)}")
        _atomic(self.path(index), lambda f: np.save(f, np.asarray(rows), allow_pickle=False))

    def load(self) -> np.ndarray:
        """All rows, once every chunk is written."""
        if self.missing():
            raise ValueError(f"cache: {len(self.missing())} chunks of '{self.directory}' are not written yet")
        return np.concatenate([np.load(self.path(i), allow_pickle=False) for i in range(self.num_chunks)])


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
