"""The IJB-B / IJB-C release as distributed with InsightFace's evaluation (``IJB_release/IJBC``)::

    <ijb_dir>/loose_crop/<image>                       the face photos
    <ijb_dir>/meta/<name>_face_tid_mid.txt             "<image> <template id> <media id>" per face
    <ijb_dir>/meta/<name>_name_5pts_score.txt          "<image> x1 y1 ... x5 y5 <detector score>"
    <ijb_dir>/meta/<name>_template_pair_label.txt      "<template 1> <template 2> <1 same | 0 not>"
    <ijb_dir>/meta/<name>_1N_gallery_{G1,G2}.csv       1:N galleries (IJB-B: ..._S1, ..._S2), and
    <ijb_dir>/meta/<name>_1N_probe_mixed.csv           1:N probes: header, then TEMPLATE_ID,SUBJECT_ID,...

``<name>`` is ``ijbb`` or ``ijbc``; ``ijb_dir`` may also be the folder holding ``IJBB/``, ``IJBC/``.
The five landmarks are left eye, right eye, nose, left and right mouth corner in the photo's
pixels. A malformed line is a :class:`UserError` naming the file and the line; the 1:N files are
optional (1:N is skipped without them).
"""
from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from tfface.core.errors import UserError, check_choice

DATASETS = ("IJBB", "IJBC")
GALLERY_NAMES = {"IJBB": ("S1", "S2"), "IJBC": ("G1", "G2")}


@dataclasses.dataclass
class Gallery:
    """A 1:N template list: template ids and the subject of each (file order, may repeat)."""

    templates: np.ndarray
    subjects: np.ndarray


@dataclasses.dataclass
class IJBRelease:
    """One IJB set, read from its files.

    ``faces``: per row of ``face_tid_mid`` the image name, template and media id. ``images``: the
    photos of the 5-points file with their ``landmarks`` (N, 5, 2) and detector ``scores`` (N,).
    ``pairs``: (P, 3) int64 (template 1, template 2, label). ``galleries``: name -> 1:N gallery
    (G1/G2 or S1/S2) and ``probes`` (None without 1:N files).
    """

    root: str
    dataset: str
    face_images: np.ndarray
    templates: np.ndarray
    medias: np.ndarray
    images: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    pairs: np.ndarray
    galleries: dict[str, Gallery]
    probes: Gallery | None

    def image_path(self, name: str) -> str:
        return os.path.join(self.root, "loose_crop", name)

    def face_rows(self) -> np.ndarray:
        """Per face (row of ``face_tid_mid``) its row in :attr:`images`, -1 for a face the
        5-points file has no landmarks for."""
        lookup = {name: i for i, name in enumerate(self.images.tolist())}
        return np.array([lookup.get(name, -1) for name in self.face_images.tolist()], np.int64)


def resolve_root(ijb_dir: str, dataset: str) -> str:
    """``ijb_dir`` itself when it holds ``meta/``, else ``ijb_dir/<dataset>``."""
    check_choice(dataset, DATASETS, "--dataset")
    for root in (ijb_dir, os.path.join(ijb_dir, dataset)):
        if os.path.isdir(os.path.join(root, "meta")):
            return root
    raise UserError(f"ijb_dir: '{ijb_dir}' has no meta/ folder (nor {dataset}/meta/): expected the IJB release layout")


def _meta(root: str, dataset: str, suffix: str) -> str:
    return os.path.join(root, "meta", f"{dataset.lower()}_{suffix}")


def _lines(path: str):
    if not os.path.isfile(path):
        raise UserError(f"ijb: missing meta file '{path}'")
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line.split()


def _bad(path: str, number: int, expected: str, line: list[str]) -> UserError:
    return UserError(f"ijb: {path} line {number}: expected {expected}, got {' '.join(line)[:80]!r}")


def read_face_tid_mid(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image names, template ids, media ids) of ``<name>_face_tid_mid.txt``."""
    names, ids = [], []
    for number, fields in _lines(path):
        if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
            raise _bad(path, number, "'<image> <template id> <media id>'", fields)
        names.append(fields[0])
        ids.append((int(fields[1]), int(fields[2])))
    if not names:
        raise UserError(f"ijb: '{path}' lists no faces")
    ids = np.array(ids, np.int64)
    return np.array(names), ids[:, 0], ids[:, 1]


def read_landmarks(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image names, landmarks (N, 5, 2), detector scores (N,)) of ``<name>_name_5pts_score.txt``."""
    names, values = [], []
    for number, fields in _lines(path):
        try:
            if len(fields) != 12:
                raise ValueError
            row = [float(v) for v in fields[1:]]
        except ValueError:
            raise _bad(path, number, "'<image> x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 <score>' (12 fields)", fields) from None
        if not np.all(np.isfinite(row)):
            raise _bad(path, number, "finite numbers", fields)
        names.append(fields[0])
        values.append(row)
    if not names:
        raise UserError(f"ijb: '{path}' lists no images")
    values = np.array(values, np.float64)
    return np.array(names), values[:, :10].reshape(-1, 5, 2).astype(np.float32), values[:, 10]


def read_pair_labels(path: str) -> np.ndarray:
    """(P, 3) int64 (template 1, template 2, label 0/1) of ``<name>_template_pair_label.txt``.

    Parsed in C (15.7M lines for IJB-C); only when the numbers do not fit the layout is the file
    read again line by line to name the first bad line.
    """
    if not os.path.isfile(path):
        raise UserError(f"ijb: missing meta file '{path}'")
    with open(path, "rb") as f:
        data = f.read()
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    try:
        values = np.fromstring(data, dtype=np.int64, sep=" ")
    except ValueError:  # not whitespace-separated integers to the end
        values = np.zeros(0, np.int64)
    if values.size == 3 * lines and lines > 0:
        pairs = values.reshape(-1, 3)
        if np.isin(pairs[:, 2], (0, 1)).all() and (pairs >= 0).all():
            return pairs
    for number, fields in _lines(path):
        if len(fields) != 3 or not all(v.isdigit() for v in fields) or fields[2] not in ("0", "1"):
            raise _bad(path, number, "'<template 1> <template 2> <label 0|1>'", fields)
    raise UserError(f"ijb: '{path}' lists no template pairs (or has blank lines between them)")


def read_gallery(path: str) -> Gallery:
    """A 1:N csv (header, then TEMPLATE_ID,SUBJECT_ID,...): template and subject per row."""
    templates, subjects = [], []
    with open(path, newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if number == 1 or not row:
                continue
            if len(row) < 2 or not (row[0].strip().isdigit() and row[1].strip().isdigit()):
                raise UserError(f"ijb: {path} line {number}: expected 'TEMPLATE_ID,SUBJECT_ID,...', "
                                f"got {','.join(row)[:80]!r}")
            templates.append(int(row[0]))
            subjects.append(int(row[1]))
    if not templates:
        raise UserError(f"ijb: '{path}' lists no templates")
    return Gallery(np.array(templates, np.int64), np.array(subjects, np.int64))


def read_release(ijb_dir: str, dataset: str, with_1n: bool = True) -> IJBRelease:
    """Reads every meta file of one IJB set (see the module docstring)."""
    root = resolve_root(ijb_dir, dataset)
    face_images, templates, medias = read_face_tid_mid(_meta(root, dataset, "face_tid_mid.txt"))
    images, landmarks, scores = read_landmarks(_meta(root, dataset, "name_5pts_score.txt"))
    pairs = read_pair_labels(_meta(root, dataset, "template_pair_label.txt"))
    galleries, probes = {}, None
    paths = {name: _meta(root, dataset, f"1N_gallery_{name}.csv") for name in GALLERY_NAMES[dataset]}
    probe_path = _meta(root, dataset, "1N_probe_mixed.csv")
    if with_1n and all(os.path.isfile(p) for p in [*paths.values(), probe_path]):
        galleries = {name: read_gallery(path) for name, path in paths.items()}
        probes = read_gallery(probe_path)
    return IJBRelease(root, dataset, face_images, templates, medias, images, landmarks, scores, pairs,
                      galleries, probes)
