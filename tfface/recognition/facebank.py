"""A facebank: the people you want to recognise, one embedding each, with stranger rejection.

    embedder = tfface.load_embedder("export/faces")
    bank, report = FaceBank.build("photos/", embedder)     # photos/<name>/<photo>...
    bank.save("facebank/")
    names, distances = bank.identify(embeddings, threshold=1.1)   # "Unknown" beyond it
    names, distances = bank.search(embeddings, k=5)               # top 5, nearest first

Each identity is the re-normalised mean of the L2-normalised embeddings of its photos' main
faces, aligned as the model's training faces were and embedded with flip TTA (MultiFace's
``prepare_facebank``). Search goes through :mod:`tfface.search` (FAISS: exact below
50k people, an IVF-PQ fast-scan index above, candidates re-ranked exactly; or Milvus).

A bank is a directory (format 2): ``facebank.json`` (the model fingerprint, the index, and the
list of segments with their SHA-256) and the segments, each ``seg-<hash>.json`` (row ids, names,
photo counts, ids of earlier rows retired) and ``seg-<hash>.npy`` (float32 sums of the rows'
embeddings, memory-mapped; read with ``allow_pickle=False``). A save appends one segment with
what changed (O(people changed)) and merges the newest segments while the last is at least half
the one before (so there are O(log people) of them); an approximate FAISS index is kept beside
as ``index-<hash>.faiss`` (bound to the fingerprint) and rewritten once a tenth of the bank
changed since. ``facebank.json`` is replaced last and atomically, so a reader sees the old bank
or the new one. A bank built with another model (another fingerprint), or whose files were
changed after writing, is refused. Format-1 banks (one ``embeddings-<hash>.npz``) are read and
written back as format 2 by the next save.

Command line: ``python -m tfface.facebank build|add|remove|list|identify`` (the tool :mod:`tfface.facebank`).
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import uuid
from typing import Iterable, NamedTuple, Sequence

import numpy as np

import tfface_align
from tfface.core.errors import UserError, check_dir
from tfface.evaluation.thresholds import THRESHOLD_FILE, load_threshold
from tfface.recognition.inference import Embedder
from tfface.recognition.faces import PhotoEmbeddings, embed_photos
from tfface.search import faiss_index
from tfface.search.faiss_index import FaissIndex
from tfface.search.index import VectorIndex, open_index

UNKNOWN = "Unknown"
META_FILE = "facebank.json"
FORMAT = "tfface-facebank"
VERSION = 2
SEGMENT_KEYS = ("people", "people_sha256", "sums", "sums_sha256", "rows")
RERANK = 16         # candidates an approximate index returns for exact re-ranking
COMPACT_MIN = 1024  # retired rows kept on disk before a full rewrite (and more than the live ones)
SNAPSHOT_MIN = 1000  # changes before the FAISS index file is rewritten (and a tenth of the bank)
SEARCH_BATCH = 2048


class BuildReport(NamedTuple):
    """Photos used per identity, and (photo, reason) of those skipped (no face, unreadable)."""

    used: dict[str, int]
    skipped: list[tuple[str, str]]


def pair_distances(embeddings: np.ndarray, centres: np.ndarray, distance_metric: int = 0) -> np.ndarray:
    """(N, K) distances between L2-normalised rows: 0 = squared Euclidean, 1 = angle / pi (facenet's)."""
    return cosine_distance(np.asarray(embeddings, np.float64) @ np.asarray(centres, np.float64).T, distance_metric)


def beyond_threshold(names: Sequence[str], distances: np.ndarray, threshold: float | None) -> list[str]:
    """``names`` with ``Unknown`` where the distance is beyond ``threshold`` (None: none is)."""
    return [UNKNOWN if threshold is not None and d > threshold else n for n, d in zip(names, distances)]


def model_threshold(embedder: Embedder, override: float | None = None, distance_metric: int = 0
                    ) -> tuple[float, int, str]:
    """(value, distance metric, where it came from): ``override`` when given, else the model's
    calibrated ``threshold.json`` (``validate_on_lfw`` / ``validate_on_bins --save_threshold``)."""
    if override is not None:
        return float(override), int(distance_metric), "--threshold"
    threshold = load_threshold(embedder.path, embedder.fingerprint)
    if threshold is None:
        raise UserError(f"threshold: the model '{embedder.path}' has no calibrated {THRESHOLD_FILE} (calibrate one "
                        "with validate_on_lfw or validate_on_bins --save_threshold) and no --threshold was given")
    return threshold.value, threshold.distance_metric, os.path.join(embedder.path, THRESHOLD_FILE)


def _check_name(name: str) -> str:
    if not name or not name.strip() or name == UNKNOWN or any(c in name for c in "/\\\n"):
        raise UserError(f"name: expected a person's name (not empty, not '{UNKNOWN}', no slashes), got {name!r}")
    return name


class FaceBank:
    """Known people: ``names[i]`` has ``centres[i]``, the re-normalised mean of ``counts[i]``
    L2-normalised face embeddings of the model with fingerprint ``fingerprint``; searched through
    ``index`` (:func:`tfface.search.index.open_index`: ``faiss``, ``milvus://HOST:PORT`` or a
    milvus-lite ``.db`` file).

    Rows are append-only in memory and on disk: a person's row has a stable id; adding photos of
    a known person retires the row and appends a new one; removing retires it.
    """

    def __init__(self, fingerprint: str, names: Sequence[str] = (), sums: np.ndarray | None = None,
                 counts: Sequence[int] = (), index: str | None = None):
        self.fingerprint, self.index_spec, self.bank_id = fingerprint, index or "faiss", uuid.uuid4().hex
        self._names: list[str] = []
        self._ids = np.zeros(0, np.int64)
        self._sums = np.zeros((0, 0), np.float32)
        self._counts = np.zeros(0, np.int64)
        self._alive = np.zeros(0, bool)
        self._rows = 0
        self._row: dict[str, int] = {}
        self._segments: list[dict] = []   # saved: {"start", "stop" (rows in memory), "removed", files...}
        self._removed: list[int] = []     # ids retired since the last save
        self.index: VectorIndex | None = None
        self._index_sync = (0, 0)         # rows and retirements the index has seen
        self._retired: list[int] = []     # every id retired in this session, in order
        self._snapshot: dict | None = None  # the FAISS index file: file, sha256, next_id, retired
        self._dir: str | None = None        # where the segments are
        self._fresh_index = False           # rebuild the index from the bank even if it looks in sync
        if len(names):
            self.add_many(names, sums, counts)

    # ------------------------------------------------------------------ building
    @classmethod
    def for_model(cls, embedder: Embedder, index: str | None = None) -> "FaceBank":
        """An empty bank for ``embedder``'s embeddings."""
        if not embedder.fingerprint:
            raise UserError(f"model: '{embedder.path}' has no fingerprint (re-export it with tfface) "
                            "so a facebank cannot be tied to it")
        return cls(embedder.fingerprint, index=index)

    @classmethod
    def build(cls, photos_dir: str, embedder: Embedder, detector: tfface_align.MTCNN | None = None,
              index: str | None = None, min_quality: float | None = None) -> tuple["FaceBank", BuildReport]:
        """A bank of every ``photos_dir/<name>/`` folder's photos (MultiFace's facebank layout), searched
        through ``index`` (see :meth:`for_model`); faces whose quality score is below ``min_quality``
        are skipped (see :func:`embed_photos`)."""
        check_dir(photos_dir, "photos_dir")
        bank = cls.for_model(embedder, index)
        people = sorted(d for d in os.listdir(photos_dir)
                        if not d.startswith(".") and os.path.isdir(os.path.join(photos_dir, d)))
        if not people:
            raise UserError(f"photos_dir: '{photos_dir}' has no sub-folders (expected PHOTOS_DIR/<name>/<photos>)")
        paths, owners = [], []
        for name in people:
            folder = os.path.join(photos_dir, name)
            for fname in sorted(os.listdir(folder)):
                if not fname.startswith(".") and os.path.isfile(os.path.join(folder, fname)):
                    paths.append(os.path.join(folder, fname))
                    owners.append(name)
        result = embed_photos(embedder, detector or tfface_align.MTCNN(), paths, min_quality=min_quality)
        used = {}
        for name in people:
            rows = [k for k, i in enumerate(result.used) if owners[i] == name]
            if rows:
                bank._add(_check_name(name), result.embeddings[rows])
                used[name] = len(rows)
        return bank, BuildReport(used, result.skipped)

    def add_person(self, name: str, photos: Sequence[str | np.ndarray], embedder: Embedder,
                   detector: tfface_align.MTCNN | None = None, min_quality: float | None = None) -> BuildReport:
        """Adds photos (paths or RGB arrays) of ``name`` (a new person, or more photos of a known
        one; faces below ``min_quality`` skipped); the other identities are left as they are."""
        _check_name(name)
        self.check_model(embedder)
        result: PhotoEmbeddings = embed_photos(embedder, detector or tfface_align.MTCNN(), photos,
                                               min_quality=min_quality)
        if len(result.used) == 0:
            raise UserError(f"add {name}: none of the {len(photos)} photos has a usable face "
                            f"({'; '.join(f'{p}: {why}' for p, why in result.skipped[:3])})")
        self._add(name, result.embeddings)
        return BuildReport({name: len(result.used)}, result.skipped)

    def _add(self, name: str, embeddings: np.ndarray) -> None:
        """Adds L2-normalised (M, D) embeddings of ``name``."""
        embeddings = np.asarray(embeddings, np.float32)
        self.add_many([name], embeddings.sum(axis=0)[None], [len(embeddings)])

    def add_many(self, names: Sequence[str], sums: np.ndarray, counts: Sequence[int]) -> None:
        """Adds people by the sums of their L2-normalised embeddings and their photo counts (known
        names get the new photos added to theirs); O(people added), amortised."""
        sums = np.asarray(sums, np.float32).reshape(len(names), -1)
        counts = np.asarray(counts, np.int64)
        if self._sums.shape[1] and sums.shape[1] != self._sums.shape[1]:
            raise UserError(f"add {names[0]}: embeddings of size {sums.shape[1]}, "
                            f"the bank holds size {self._sums.shape[1]}")
        if len(set(names)) != len(names):
            raise UserError("add: the same name twice in one call")
        known = [self._row[n] for n in names if n in self._row]
        if known:
            mine = np.array([n in self._row for n in names])
            sums, counts = sums.copy(), counts.copy()
            sums[mine] += self._sums[known]
            counts[mine] += self._counts[known]
            self._retire(np.array(known))
        self._grow(len(names), sums.shape[1])
        rows = np.arange(self._rows, self._rows + len(names))
        first_id = int(self._ids[self._rows - 1]) + 1 if self._rows else 0
        self._ids[rows] = np.arange(first_id, first_id + len(names))
        self._sums[rows], self._counts[rows], self._alive[rows] = sums, counts, True
        self._names.extend(names)
        self._row.update(zip(names, rows.tolist()))
        self._rows += len(names)

    def _grow(self, extra: int, dim: int) -> None:
        """Room for ``extra`` more rows (capacity doubles: appends are amortised O(1))."""
        if self._rows + extra <= len(self._ids):
            return
        capacity = max(2 * len(self._ids), self._rows + extra, 16)
        ids, sums = np.zeros(capacity, np.int64), np.zeros((capacity, dim), np.float32)
        counts, alive = np.zeros(capacity, np.int64), np.zeros(capacity, bool)
        n = self._rows
        ids[:n], counts[:n], alive[:n] = self._ids[:n], self._counts[:n], self._alive[:n]
        if n:
            sums[:n] = self._sums[:n]
        self._ids, self._sums, self._counts, self._alive = ids, sums, counts, alive

    def _retire(self, rows: np.ndarray) -> None:
        for row in rows.tolist():
            del self._row[self._names[row]]
        self._alive[rows] = False
        self._removed.extend(self._ids[rows].tolist())
        self._retired.extend(self._ids[rows].tolist())

    def remove_person(self, name: str) -> None:
        """Drops ``name``; the other identities are left as they are."""
        if name not in self._row:
            known = ", ".join(list(self._row)[:10]) + (" ..." if len(self._row) > 10 else "")
            raise UserError(f"remove: '{name}' is not in the facebank (known: {known or 'nobody'})")
        self._retire(np.array([self._row[name]]))

    # ------------------------------------------------------------------ the people
    def _live(self) -> np.ndarray:
        return np.flatnonzero(self._alive[:self._rows])

    @property
    def names(self) -> list[str]:
        """Names of the people, in the order they were (last) added."""
        return [self._names[i] for i in self._live()]

    @property
    def counts(self) -> list[int]:
        """Photos per person, as :attr:`names`."""
        return self._counts[self._live()].tolist()

    @property
    def sums(self) -> np.ndarray:
        """(K, D) sums of each person's L2-normalised embeddings, as :attr:`names`."""
        return np.asarray(self._sums[self._live()], np.float32)

    @property
    def centres(self) -> np.ndarray:
        """(K, D) identity embeddings: the re-normalised mean of each person's embeddings."""
        return _normalised(self.sums)

    def __len__(self) -> int:
        return len(self._row)

    # ------------------------------------------------------------------ recognising
    def search(self, embeddings: np.ndarray, k: int = 1, distance_metric: int = 0
               ) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` nearest people of each L2-normalised embedding (N, D), nearest first, and
        their distances (N, k): exact distances, the candidates re-ranked exactly where the index
        is approximate; rows padded with ``Unknown`` / inf when the bank has fewer than ``k``."""
        embeddings = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
        if not len(self) or not len(embeddings):
            return [[UNKNOWN] * k for _ in embeddings], np.full((len(embeddings), k), np.inf)
        index = self._synced_index()
        names, distances = [], []
        for start in range(0, len(embeddings), SEARCH_BATCH):
            batch_names, batch_distances = self._search_batch(index, embeddings[start:start + SEARCH_BATCH], k,
                                                              distance_metric)
            names += batch_names
            distances.append(batch_distances)
        return names, np.concatenate(distances)

    def _search_batch(self, index: VectorIndex, embeddings: np.ndarray, k: int, distance_metric: int
                      ) -> tuple[list[list[str]], np.ndarray]:
        exact = getattr(index, "factory", "Flat") == "Flat"
        _, ids = index.search(embeddings, k if exact else max(k, RERANK))
        rows = np.searchsorted(self._ids[:self._rows], ids).clip(0, max(self._rows - 1, 0))
        valid = (ids >= 0) & (self._ids[rows] == ids) & self._alive[rows]
        candidates = _normalised(np.asarray(self._sums[rows.ravel()], np.float32)).reshape(*rows.shape, -1)
        cosines = np.einsum("nd,nkd->nk", embeddings.astype(np.float64), candidates.astype(np.float64))
        cosines[~valid] = -np.inf
        order = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(cosines, order, 1)
        distances = np.full(best.shape, np.inf)
        finite = np.isfinite(best)
        distances[finite] = cosine_distance(best[finite], distance_metric)
        picked = np.take_along_axis(rows, order, 1)
        names = [[self._names[r] if ok else UNKNOWN for r, ok in zip(row, ok_row)]
                 for row, ok_row in zip(picked.tolist(), finite.tolist())]
        return names, distances

    def identify(self, embeddings: np.ndarray, threshold: float | None = None, distance_metric: int = 0
                 ) -> tuple[list[str], np.ndarray]:
        """Nearest person of each L2-normalised embedding (N, D) and its distance; ``Unknown``
        when that distance is beyond ``threshold`` (None: always the nearest person)."""
        names, distances = self.search(embeddings, 1, distance_metric)
        return beyond_threshold([n[0] for n in names], distances[:, 0], threshold), distances[:, 0]

    def check_model(self, embedder: Embedder) -> None:
        """Refuses a model other than the one the bank was built with."""
        if embedder.fingerprint != self.fingerprint:
            raise UserError(f"facebank: built with the model of fingerprint {self.fingerprint}, but "
                            f"'{embedder.path}' has fingerprint {embedder.fingerprint}; rebuild the "
                            "facebank with this model (tfface-facebank build)")

    # ------------------------------------------------------------------ the index
    def _synced_index(self) -> VectorIndex:
        """The index, brought up to date with the rows added and retired since it last was."""
        rows, retired = self._index_sync
        opened = self.index is None
        if opened:
            self.index = open_index(self.index_spec, self._sums.shape[1], self.fingerprint, self.bank_id)
            rebuild = isinstance(self.index, FaissIndex) or len(self.index) != len(self) or self._fresh_index
        else:
            rebuild = isinstance(self.index, FaissIndex) and self.index.wants_rebuild(len(self))
        if rebuild:
            live = self._live()
            self.index.rebuild(self._ids[live], _Centres(self._sums, live))
            self._snapshot = None
        elif not opened:
            if len(self._retired) > retired:
                self.index.remove(np.array(self._retired[retired:], np.int64))
            new = rows + np.flatnonzero(self._alive[rows:self._rows])
            if len(new):
                self.index.add(self._ids[new], _normalised(np.asarray(self._sums[new])))
        self._index_sync = (self._rows, len(self._retired))
        return self.index

    def index_kind(self) -> str:
        """What searches the bank: ``faiss <factory>`` or the Milvus URI."""
        index = self._synced_index()
        return f"faiss {index.factory}" if isinstance(index, FaissIndex) else index.spec

    def index_bytes(self) -> int:
        """Bytes of the index's saved file (0 where none is kept: exact FAISS, Milvus)."""
        return int((self._snapshot or {}).get("bytes", 0))

    # ------------------------------------------------------------------ files
    def save(self, bank_dir: str) -> None:
        """Writes what changed since the last save into ``bank_dir`` atomically (module docstring)."""
        os.makedirs(bank_dir, exist_ok=True)
        if self._dir != os.path.realpath(bank_dir) or self._compact_due():
            if self.index is not None:
                self._synced_index()  # ids survive the compaction, row numbers do not
            self._compact_memory()
            self._index_sync = (self._rows, len(self._retired))
            self._segments, self._snapshot = [], None
            self._segments.append(self._write_segment(bank_dir, 0, self._rows, []))
        elif self._rows > (self._segments[-1]["stop"] if self._segments else 0) or self._removed:
            self._segments.append(self._write_segment(bank_dir, self._segments[-1]["stop"] if self._segments else 0,
                                                      self._rows, self._removed))
            while len(self._segments) > 1 and 2 * _size(self._segments[-1]) >= _size(self._segments[-2]):
                last, prev = self._segments.pop(), self._segments.pop()
                self._segments.append(self._write_segment(bank_dir, prev["start"], last["stop"],
                                                          prev["removed"] + last["removed"]))
        self._save_snapshot(bank_dir)
        if self.index_spec != "faiss" and len(self):
            self._synced_index()
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "bank_id": self.bank_id,
                "index": self.index_spec, "embedding_size": int(self._sums.shape[1]) if self._rows else None,
                "people": len(self), "segments": [{k: s[k] for k in SEGMENT_KEYS} for s in self._segments],
                "faiss": {k: v for k, v in self._snapshot.items() if k != "bytes"} if self._snapshot else None}
        _write_atomic(os.path.join(bank_dir, META_FILE), json.dumps(meta, indent=1).encode())
        self._dir, self._removed = os.path.realpath(bank_dir), []
        keep = {s[k] for s in self._segments for k in ("people", "sums")} | {(self._snapshot or {}).get("file")}
        for fname in os.listdir(bank_dir):
            if (fname.startswith(("seg-", "index-", "embeddings-", META_FILE + ".tmp-"))) and fname not in keep:
                os.remove(os.path.join(bank_dir, fname))

    def _compact_due(self) -> bool:
        dead = self._rows - len(self)
        return dead > max(len(self), COMPACT_MIN)

    def _compact_memory(self) -> None:
        """Drops retired rows from memory (their ids stay retired)."""
        live = self._live()
        if len(live) == self._rows:
            return
        self._names = [self._names[i] for i in live]
        self._ids, self._counts = self._ids[live], self._counts[live]
        self._sums, self._alive = np.asarray(self._sums[live], np.float32), np.ones(len(live), bool)
        self._rows, self._row = len(live), dict(zip(self._names, range(len(live))))

    def _write_segment(self, bank_dir: str, start: int, stop: int, removed: list[int]) -> dict:
        """Writes rows [start, stop) still alive and the ids of earlier rows retired (``removed``)."""
        rows = start + np.flatnonzero(self._alive[start:stop])
        first = int(self._ids[start]) if start < self._rows else int(self._ids[self._rows - 1]) + 1 if self._rows else 0
        removed = sorted({i for i in removed if i < first})
        people = json.dumps({"ids": self._ids[rows].tolist(), "names": [self._names[i] for i in rows],
                             "counts": self._counts[rows].tolist(), "removed": removed}).encode()
        segment = {"start": start, "stop": stop, "removed": removed, "rows": len(rows)}
        segment["people"], segment["people_sha256"] = _write_named(bank_dir, "json", [people])
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (len(rows), self._sums.shape[1])})
        blocks = (np.ascontiguousarray(self._sums[rows[i:i + 65536]], np.float32).tobytes()
                  for i in range(0, len(rows), 65536))
        segment["sums"], segment["sums_sha256"] = _write_named(bank_dir, "npy", itertools.chain([header.getvalue()],
                                                                                                blocks))
        return segment

    def _save_snapshot(self, bank_dir: str) -> None:
        """Keeps the approximate FAISS index's file, rewritten once it lags the bank by a tenth."""
        if self.index_spec != "faiss" or len(self) < faiss_index.EXACT_LIMIT:
            self._snapshot = None
            return
        if self._snapshot and self._snapshot.get("fingerprint") == self.fingerprint:
            self._snapshot["retired"] = sorted(set(self._snapshot["retired"]) |
                                               {i for i in self._retired if i < self._snapshot["next_id"]})
            lag = len(self._snapshot["retired"]) + int(np.sum(self._ids[:self._rows] >= self._snapshot["next_id"]))
            if lag <= max(SNAPSHOT_MIN, len(self) // 10):
                return
        index = self._synced_index()
        data = index.to_bytes(self.fingerprint)
        digest = hashlib.sha256(data).hexdigest()
        name = f"index-{digest[:20]}.faiss"
        _write_atomic(os.path.join(bank_dir, name), data)
        self._snapshot = {"file": name, "sha256": digest, "fingerprint": self.fingerprint, "bytes": len(data),
                          "next_id": int(self._ids[self._rows - 1]) + 1, "retired": []}

    @classmethod
    def load(cls, bank_dir: str, embedder: Embedder | None = None, rebuild_index: bool = False) -> "FaceBank":
        """Reads a bank (format 2, or 1 of earlier tfface); refuses files changed after writing,
        an index of another model and, given ``embedder``, another model. ``rebuild_index``: ignore
        the saved FAISS index (the next search and save rebuild it from the bank)."""
        meta_path = os.path.join(bank_dir, META_FILE)
        if not os.path.isfile(meta_path):
            raise UserError(f"facebank: '{bank_dir}' holds no {META_FILE} (build one with tfface-facebank build)")
        meta = _read_meta(meta_path)
        if meta.get("format") != FORMAT or meta.get("version") not in (1, VERSION):
            raise UserError(f"facebank: '{meta_path}' is not a tfface facebank (version 1 or {VERSION})")
        bank = cls(str(meta.get("fingerprint")), index=meta.get("index"))
        bank._fresh_index = rebuild_index
        if meta["version"] == 1:
            bank.add_many(*_read_v1(bank_dir, meta))
        else:
            bank.bank_id = str(meta.get("bank_id"))
            bank._read_segments(bank_dir, meta)
            bank._dir = os.path.realpath(bank_dir)
            if meta.get("faiss") and not rebuild_index:
                bank._read_snapshot(bank_dir, meta["faiss"])
        if bank.index_spec != "faiss" and len(bank):
            bank._synced_index()  # Milvus: the collection matches the bank or is refilled from it
        if embedder is not None:
            bank.check_model(embedder)
        return bank

    def _read_segments(self, bank_dir: str, meta: dict) -> None:
        parts, removed, start = [], [], 0
        for entry in meta.get("segments", []):
            people = json.loads(_read_checked(bank_dir, entry.get("people"), entry.get("people_sha256")))
            path = os.path.join(bank_dir, os.path.basename(str(entry.get("sums"))))
            _read_checked(bank_dir, entry.get("sums"), entry.get("sums_sha256"), keep=False)
            try:
                sums = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as err:
                raise UserError(f"facebank: cannot read '{path}' ({err})") from None
            if sums.dtype != np.float32 or sums.ndim != 2 or not (
                    len(sums) == len(people["ids"]) == len(people["names"]) == len(people["counts"])):
                raise UserError(f"facebank: '{path}' is inconsistent with its segment ({sums.shape} {sums.dtype})")
            parts.append((people, sums))
            removed.extend(people["removed"])
            self._segments.append({**{k: entry[k] for k in SEGMENT_KEYS}, "start": start,
                                   "stop": start + len(sums), "removed": people["removed"]})
            start += len(sums)
        if not parts:
            return
        ids = np.concatenate([np.asarray(p["ids"], np.int64) for p, _ in parts])
        sums = parts[0][1] if len(parts) == 1 else np.concatenate([s for _, s in parts])
        if len(ids) and (np.any(np.diff(ids) <= 0) or sums.shape[1] != meta.get("embedding_size")):
            raise UserError(f"facebank: '{bank_dir}' is inconsistent (row ids out of order or sizes differ)")
        self._names = [n for p, _ in parts for n in p["names"]]
        self._ids, self._sums, self._rows = ids, sums, len(ids)
        self._counts = np.concatenate([np.asarray(p["counts"], np.int64) for p, _ in parts])
        self._alive = np.ones(len(ids), bool)
        rows = np.searchsorted(ids, np.asarray(removed, np.int64)).clip(0, len(ids) - 1)
        self._alive[rows[ids[rows] == np.asarray(removed, np.int64)]] = False
        live = self._live()
        self._row = dict(zip((self._names[i] for i in live), live.tolist()))
        if len(self._row) != len(live) or len(live) != meta.get("people"):
            raise UserError(f"facebank: '{bank_dir}' is inconsistent ({len(live)} people, "
                            f"{len(self._row)} names, {meta.get('people')} expected)")

    def _read_snapshot(self, bank_dir: str, snapshot: dict) -> None:
        try:
            data = _read_checked(bank_dir, snapshot.get("file"), snapshot.get("sha256"))
            index = FaissIndex.from_bytes(data, self.fingerprint, self._sums.shape[1],
                                          os.path.join(bank_dir, str(snapshot.get("file"))))
        except UserError as err:
            raise UserError(f"{err}; rebuild the index: tfface-facebank reindex --facebank {bank_dir}") from None
        self.index, self._snapshot = index, {**snapshot, "bytes": len(data), "fingerprint": self.fingerprint}
        index.remove(np.asarray(snapshot.get("retired", []), np.int64))
        self._index_sync = (int(np.searchsorted(self._ids[:self._rows], snapshot["next_id"])), 0)


def cosine_distance(cosines: np.ndarray, distance_metric: int = 0) -> np.ndarray:
    """Distances of cosines: 0 = squared Euclidean between unit vectors, 1 = angle / pi."""
    cosines = np.clip(cosines, -1.0, 1.0)
    if distance_metric == 0:
        return np.maximum(2.0 - 2.0 * cosines, 0.0)
    if distance_metric == 1:
        return np.arccos(cosines) / np.pi
    raise UserError(f"distance_metric: expected 0 (squared Euclidean) or 1 (angular), got {distance_metric!r}")


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class _Centres:
    """Rows ``rows`` of ``sums``, re-normalised when read (no copy of the whole bank)."""

    def __init__(self, sums: np.ndarray, rows: np.ndarray):
        self.sums, self.rows = sums, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, which) -> np.ndarray:
        return _normalised(np.asarray(self.sums[self.rows[which]], np.float32))


def _size(segment: dict) -> int:
    return segment["rows"] + len(segment["removed"])


def _read_checked(bank_dir: str, name, sha256, keep: bool = True) -> bytes:
    """A bank file's bytes (``keep``) after checking its SHA-256 against the metadata."""
    path = os.path.join(bank_dir, os.path.basename(str(name)))
    if not os.path.isfile(path):
        raise UserError(f"facebank: '{path}' named by {META_FILE} is missing")
    digest, chunks = hashlib.sha256(), []
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
            if keep:
                chunks.append(block)
    if digest.hexdigest() != sha256:
        raise UserError(f"facebank: '{path}' was changed after the bank was written (SHA-256 mismatch)")
    return b"".join(chunks)


def _read_v1(bank_dir: str, meta: dict) -> tuple[list[str], np.ndarray, list[int]]:
    """Names, sums and counts of a format-1 bank (one ``embeddings-*.npz``)."""
    npz_path = os.path.join(bank_dir, os.path.basename(str(meta.get("embeddings_file"))))
    data = _read_checked(bank_dir, meta.get("embeddings_file"), meta.get("sha256"))
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            sums, counts = arrays["sums"].astype(np.float32), arrays["counts"].tolist()
    except (ValueError, KeyError, OSError) as err:
        raise UserError(f"facebank: cannot read '{npz_path}' ({err})") from None
    names = list(meta.get("names", []))
    if len(names) != len(sums) or counts != meta.get("counts") or (len(sums) and sums.ndim != 2):
        raise UserError(f"facebank: '{bank_dir}' is inconsistent ({len(names)} names, {len(sums)} embeddings)")
    return names, sums.reshape(len(names), -1), counts


def _read_meta(path: str) -> dict:
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"facebank: cannot read '{path}' ({err})") from None
    if not isinstance(meta, dict):
        raise UserError(f"facebank: '{path}' is not a tfface facebank")
    return meta


def _write_named(bank_dir: str, suffix: str, blocks: Iterable[bytes]) -> tuple[str, str]:
    """Writes ``blocks`` to ``seg-<hash>.<suffix>`` atomically; returns its name and SHA-256."""
    digest, tmp = hashlib.sha256(), os.path.join(bank_dir, f"seg-new.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            for block in blocks:
                digest.update(block)
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        name = f"seg-{digest.hexdigest()[:20]}.{suffix}"
        os.replace(tmp, os.path.join(bank_dir, name))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return name, digest.hexdigest()


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
