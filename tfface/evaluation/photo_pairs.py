"""Verification on raw photos: each face detected and aligned as the model's training faces were.

``validate_on_lfw --align`` and the transfer check of the ORL recipe use :func:`evaluate_photo_pairs`;
pairs may come from an LFW ``pairs.txt`` or from a CSV with ``file_x,file_y,Decision`` columns
(``Yes``/``No``, as ``testdata/faces/pairs.csv``). A pair with a photo where no face is found
cannot be judged: it is dropped and counted, never compared on something else.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

import numpy as np

from tfface.core import images
from tfface.core.errors import UserError, check_file
from tfface.evaluation.verification import VerificationResult, evaluate


@dataclasses.dataclass
class PhotoPairsResult:
    result: VerificationResult
    num_pairs: int  # pairs evaluated
    dropped_pairs: int  # pairs with a photo without a face
    photos_without_face: list[str]


def read_csv_pairs(path: str) -> tuple[list[str], np.ndarray]:
    """Interleaved photo paths (2N,) and ``issame`` (N,) of a ``file_x,file_y,Decision`` CSV
    (paths relative to the CSV's folder)."""
    check_file(path, "pairs")
    folder = os.path.dirname(os.path.abspath(path))
    paths, issame = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"file_x", "file_y", "Decision"} <= set(reader.fieldnames or ()):
            raise UserError(f"pairs: '{path}' needs the columns file_x, file_y, Decision, has {reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            decision = row["Decision"].strip().lower()
            if decision not in ("yes", "no"):
                raise UserError(f"pairs: line {number} of '{path}': Decision must be Yes or No, got {row['Decision']!r}")
            paths += [os.path.join(folder, row["file_x"]), os.path.join(folder, row["file_y"])]
            issame.append(decision == "yes")
    missing = sorted({p for p in paths if not os.path.isfile(p)})
    if missing:
        raise UserError(f"pairs: {len(missing)} photo(s) named in '{path}' are missing: {', '.join(missing[:3])}")
    return paths, np.array(issame, bool)


def unique_rows(paths: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct ``paths`` (sorted) and, for each of ``paths``, its row among them: pairs
    name a photo many times, it is read and embedded once."""
    unique = sorted(set(paths))
    position = {path: i for i, path in enumerate(unique)}
    return unique, np.array([position[p] for p in paths], np.int64)


def embed_faces(embedder, faces: np.ndarray, use_flipped_images: bool = False) -> np.ndarray:
    """``embedder.embed_faces(faces)``; with ``use_flipped_images`` concatenated with the
    embeddings of the mirror images, as facenet's ``validate_on_lfw`` does (faces are resized
    to the model's size first and then mirrored, as evaluation reads aligned files)."""
    faces = np.asarray(images.resize(faces, embedder.image_size))
    embeddings = embedder.embed_faces(faces)
    if use_flipped_images:
        embeddings = np.concatenate([embeddings, embedder.embed_faces(faces[:, :, ::-1])], axis=1)
    return embeddings


def evaluate_photo_pairs(
    embedder, paths: Sequence[str], issame: np.ndarray, use_flipped_images: bool = False, nrof_folds: int = 10,
    distance_metric: int = 0, subtract_mean: bool = False, far_target: float = 1e-3,
) -> PhotoPairsResult:
    """facenet's protocol on raw photos aligned by ``embedder`` (a :class:`tfface.recognition.inference.Embedder`);
    every distinct photo is aligned and embedded once (with its mirror image when
    ``use_flipped_images``, the two embeddings concatenated as facenet does)."""
    unique, rows = unique_rows(paths)
    faces, found = embedder.align_files(unique)[:2]
    embeddings = embed_faces(embedder, faces, use_flipped_images)
    face_row = np.full(len(unique), -1)
    face_row[found] = np.arange(int(found.sum()))
    index = face_row[rows].reshape(-1, 2)
    keep = (index >= 0).all(axis=1)
    if keep.sum() < nrof_folds or len(np.unique(issame[keep])) < 2:
        raise UserError(f"pairs: only {int(keep.sum())} of {len(keep)} pairs have a face in both photos; "
                        f"too few for {nrof_folds} folds")
    result = evaluate(embeddings[index[keep].reshape(-1)], issame[keep], nrof_folds, distance_metric,
                      subtract_mean, far_target)
    return PhotoPairsResult(result, int(keep.sum()), int((~keep).sum()),
                            [p for p, ok in zip(unique, found) if not ok])
