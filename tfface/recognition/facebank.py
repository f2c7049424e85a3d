"""A facebank: the people you want to recognise, one embedding each, with stranger rejection.

    embedder = tfface.load_embedder("export/faces")
    bank, report = FaceBank.build("photos/", embedder)     # photos/<name>/<photo>...
    bank.save("facebank/")
    names, distances = bank.identify(embeddings, threshold=1.1)   # "Unknown" beyond it

Each identity is the re-normalised mean of the L2-normalised embeddings of its photos' main
faces, aligned as the model's training faces were and embedded with flip TTA (MultiFace's
``prepare_facebank``). A bank is a directory: ``facebank.json`` (names, photo counts, the model
fingerprint, the embeddings file and its SHA-256) and ``embeddings-<hash>.npz`` (float32 sums
of the identities' embeddings; read with ``allow_pickle=False``). The JSON is replaced last and
atomically, so a reader sees the old bank or the new one. A bank built with another model (another
fingerprint), or whose files were changed after writing, is refused.

Command line: ``python -m tfface.facebank build|add|remove|list|identify`` (the tool :mod:`tfface.facebank`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from typing import NamedTuple, Sequence

import numpy as np

import tfface_align
from tfface.core.errors import UserError, check_dir
from tfface.evaluation.thresholds import THRESHOLD_FILE, load_threshold
from tfface.recognition.inference import Embedder
from tfface.recognition.faces import PhotoEmbeddings, embed_photos

UNKNOWN = "Unknown"
META_FILE = "facebank.json"
FORMAT = "tfface-facebank"
VERSION = 1


class BuildReport(NamedTuple):
    """Photos used per identity, and (photo, reason) of those skipped (no face, unreadable)."""

    used: dict[str, int]
    skipped: list[tuple[str, str]]


def pair_distances(embeddings: np.ndarray, centres: np.ndarray, distance_metric: int = 0) -> np.ndarray:
    """(N, K) distances between L2-normalised rows: 0 = squared Euclidean, 1 = angle / pi (facenet's)."""
    cosines = np.clip(np.asarray(embeddings, np.float64) @ np.asarray(centres, np.float64).T, -1.0, 1.0)
    if distance_metric == 0:
        return np.maximum(2.0 - 2.0 * cosines, 0.0)
    if distance_metric == 1:
        return np.arccos(cosines) / np.pi
    raise UserError(f"distance_metric: expected 0 (squared Euclidean) or 1 (angular), got {distance_metric!r}")


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
    L2-normalised face embeddings of the model with fingerprint ``fingerprint``."""

    def __init__(self, fingerprint: str, names: Sequence[str] = (), sums: np.ndarray | None = None,
                 counts: Sequence[int] = ()):
        self.fingerprint = fingerprint
        self.names = list(names)
        self.sums = np.zeros((0, 0), np.float32) if sums is None else np.asarray(sums, np.float32)
        self.counts = [int(c) for c in counts]

    # ------------------------------------------------------------------ building
    @classmethod
    def for_model(cls, embedder: Embedder) -> "FaceBank":
        """An empty bank for ``embedder``'s embeddings."""
        if not embedder.fingerprint:
            raise UserError(f"model: '{embedder.path}' has no fingerprint (re-export it with tfface) "
                            "so a facebank cannot be tied to it")
        return cls(embedder.fingerprint)

    @classmethod
    def build(cls, photos_dir: str, embedder: Embedder, detector: tfface_align.MTCNN | None = None,
              min_quality: float | None = None) -> tuple["FaceBank", BuildReport]:
        """A bank of every ``photos_dir/<name>/`` folder's photos (MultiFace's facebank layout);
        faces whose quality score is below ``min_quality`` are skipped (see :func:`embed_photos`)."""
        check_dir(photos_dir, "photos_dir")
        bank = cls.for_model(embedder)
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
        total = np.asarray(embeddings, np.float32).sum(axis=0)
        if self.sums.size and total.shape[0] != self.sums.shape[1]:
            raise UserError(f"add {name}: embeddings of size {total.shape[0]}, "
                            f"the bank holds size {self.sums.shape[1]}")
        if name in self.names:
            i = self.names.index(name)
            self.sums[i] += total
            self.counts[i] += len(embeddings)
        else:
            self.sums = total[None] if not self.sums.size else np.concatenate([self.sums, total[None]])
            self.names.append(name)
            self.counts.append(len(embeddings))

    def remove_person(self, name: str) -> None:
        """Drops ``name``; the other identities are left as they are."""
        if name not in self.names:
            raise UserError(f"remove: '{name}' is not in the facebank (known: {', '.join(self.names) or 'nobody'})")
        i = self.names.index(name)
        self.sums = np.delete(self.sums, i, axis=0)
        del self.names[i], self.counts[i]

    # ------------------------------------------------------------------ recognising
    @property
    def centres(self) -> np.ndarray:
        """(K, D) identity embeddings: the re-normalised mean of each person's embeddings."""
        return self.sums / np.maximum(np.linalg.norm(self.sums, axis=1, keepdims=True), 1e-12)

    def identify(self, embeddings: np.ndarray, threshold: float | None = None, distance_metric: int = 0
                 ) -> tuple[list[str], np.ndarray]:
        """Nearest person of each L2-normalised embedding (N, D) and its distance; ``Unknown``
        when that distance is beyond ``threshold`` (None: always the nearest person)."""
        embeddings = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
        if not self.names or not len(embeddings):
            return [UNKNOWN] * len(embeddings), np.full(len(embeddings), np.inf)
        distances = pair_distances(embeddings, self.centres, distance_metric)
        nearest = distances.argmin(axis=1)
        best = distances[np.arange(len(embeddings)), nearest]
        names = [UNKNOWN if threshold is not None and d > threshold else self.names[k] for k, d in zip(nearest, best)]
        return names, best

    def check_model(self, embedder: Embedder) -> None:
        """Refuses a model other than the one the bank was built with."""
        if embedder.fingerprint != self.fingerprint:
            raise UserError(f"facebank: built with the model of fingerprint {self.fingerprint}, but "
                            f"'{embedder.path}' has fingerprint {embedder.fingerprint}; rebuild the "
                            "facebank with this model (tfface-facebank build)")

    # ------------------------------------------------------------------ files
    def save(self, bank_dir: str) -> None:
        """Writes the bank into ``bank_dir`` atomically (see the module docstring)."""
        os.makedirs(bank_dir, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, sums=self.sums.astype(np.float32), counts=np.asarray(self.counts, np.int64))
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        npz_name = f"embeddings-{digest[:16]}.npz"
        _write_atomic(os.path.join(bank_dir, npz_name), data)
        meta = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "names": self.names,
                "counts": self.counts, "embedding_size": int(self.sums.shape[1]) if self.sums.size else None,
                "embeddings_file": npz_name, "sha256": digest}
        meta_path = os.path.join(bank_dir, META_FILE)
        old = _read_meta(meta_path).get("embeddings_file") if os.path.isfile(meta_path) else None
        _write_atomic(meta_path, json.dumps(meta, indent=1).encode())
        if old and old != npz_name and os.path.isfile(os.path.join(bank_dir, os.path.basename(old))):
            os.remove(os.path.join(bank_dir, os.path.basename(old)))

    @classmethod
    def load(cls, bank_dir: str, embedder: Embedder | None = None) -> "FaceBank":
        """Reads a bank; refuses files changed after writing and, given ``embedder``, another model."""
        meta_path = os.path.join(bank_dir, META_FILE)
        if not os.path.isfile(meta_path):
            raise UserError(f"facebank: '{bank_dir}' holds no {META_FILE} (build one with tfface-facebank build)")
        meta = _read_meta(meta_path)
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise UserError(f"facebank: '{meta_path}' is not a tfface facebank (version {VERSION})")
        npz_path = os.path.join(bank_dir, os.path.basename(str(meta.get("embeddings_file"))))
        if not os.path.isfile(npz_path):
            raise UserError(f"facebank: '{npz_path}' named by {META_FILE} is missing")
        with open(npz_path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise UserError(f"facebank: '{npz_path}' was changed after the bank was written (SHA-256 mismatch)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                sums, counts = arrays["sums"].astype(np.float32), arrays["counts"].tolist()
        except (ValueError, KeyError, OSError) as err:
            raise UserError(f"facebank: cannot read '{npz_path}' ({err})") from None
        names = list(meta.get("names", []))
        if len(names) != len(sums) or counts != meta.get("counts") or (len(sums) and sums.ndim != 2):
            raise UserError(f"facebank: '{bank_dir}' is inconsistent ({len(names)} names, {len(sums)} embeddings)")
        bank = cls(str(meta.get("fingerprint")), names, sums if len(sums) else None, counts)
        if embedder is not None:
            bank.check_model(embedder)
        return bank


def _read_meta(path: str) -> dict:
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"facebank: cannot read '{path}' ({err})") from None
    if not isinstance(meta, dict):
        raise UserError(f"facebank: '{path}' is not a tfface facebank")
    return meta


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
