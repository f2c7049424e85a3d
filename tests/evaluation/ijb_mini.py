"""A synthetic IJB mini-release in the exact layout of the real one (see tfface.evaluation.ijb_release).

200 subjects x 3 templates, 2,000 tiny photos spread over the templates in 1-3 medias each;
template ids and media ids are sparse (as in the release). 1:N: gallery G1 holds the first
template of subjects 0-99, G2 of subjects 100-199, the other 400 templates are the probes.
1:1: every same-subject template pair (600) and 60,000 distinct different-subject pairs.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import cv2
import numpy as np

from tfface_align.transform import ARCFACE_TEMPLATE


class MiniTruth(NamedTuple):
    """What the generator made: per photo (5-points order) its subject; per template its id and subject."""

    image_subjects: np.ndarray
    template_ids: np.ndarray
    template_subjects: np.ndarray
    side: int


def make_mini_release(root: str, dataset: str = "IJBC", subjects: int = 200, per_subject: int = 3,
                      photos: int = 2000, impostors: int = 60000, side: int = 24, seed: int = 0) -> MiniTruth:
    """Writes ``root/meta/*`` and ``root/loose_crop/*.jpg``; returns the truth."""
    rng = np.random.default_rng(seed)
    name = dataset.lower()
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    os.makedirs(os.path.join(root, "loose_crop"), exist_ok=True)
    count = subjects * per_subject
    template_ids = 7 + 5 * np.arange(count)  # sparse ids
    template_subjects = np.repeat(np.arange(subjects), per_subject)
    # every template gets at least one photo, the rest at random; 1-3 medias per template
    photo_template = np.r_[np.arange(count), rng.integers(0, count, photos - count)]
    rng.shuffle(photo_template)
    media_count = rng.integers(1, 4, count)
    photo_media = 1000 + 10 * photo_template + rng.integers(0, media_count[photo_template])
    patterns = rng.integers(0, 256, (subjects, side, side, 3))
    points = ARCFACE_TEMPLATE * side / 112.0
    tid_mid, five_points = [], []
    for k in range(photos):
        image = f"{k + 1}.jpg"
        subject = template_subjects[photo_template[k]]
        pixels = np.clip(patterns[subject] + rng.normal(0, 20, patterns[subject].shape), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(root, "loose_crop", image), pixels)
        marks = points + rng.normal(0, 0.3, points.shape)
        tid_mid.append(f"{image} {template_ids[photo_template[k]]} {photo_media[k]}")
        five_points.append(" ".join([image, *(f"{v:.3f}" for v in marks.ravel()), f"{rng.uniform(0.5, 1):.6f}"]))
    _write(root, f"{name}_face_tid_mid.txt", tid_mid)
    _write(root, f"{name}_name_5pts_score.txt", five_points)
    genuine = [(a, b) for s in range(subjects) for a in range(s * per_subject, (s + 1) * per_subject)
               for b in range(a + 1, (s + 1) * per_subject)]
    pairs = {(a, b, 1) for a, b in genuine}
    while len(pairs) < len(genuine) + impostors:
        a, b = rng.integers(0, count, 2)
        if template_subjects[a] != template_subjects[b]:
            pairs.add((min(a, b), max(a, b), 0))
    _write(root, f"{name}_template_pair_label.txt",
           [f"{template_ids[a]} {template_ids[b]} {label}" for a, b, label in sorted(pairs)])
    galleries = {"G1": range(0, subjects // 2), "G2": range(subjects // 2, subjects)} if dataset == "IJBC" else \
        {"S1": range(0, subjects // 2), "S2": range(subjects // 2, subjects)}
    for gallery, members in galleries.items():
        chosen = [s * per_subject for s in members]
        _write(root, f"{name}_1N_gallery_{gallery}.csv", _csv(chosen, photo_template, template_ids, template_subjects))
    probes = [t for t in range(count) if t % per_subject]
    _write(root, f"{name}_1N_probe_mixed.csv", _csv(probes, photo_template, template_ids, template_subjects))
    return MiniTruth(template_subjects[photo_template], template_ids, template_subjects, side)


def _csv(templates, photo_template, template_ids, template_subjects) -> list[str]:
    rows = ["TEMPLATE_ID,SUBJECT_ID,FILENAME"]
    for t in templates:
        rows += [f"{template_ids[t]},{template_subjects[t] + 1},img/{k + 1}.jpg"
                 for k in np.flatnonzero(photo_template == t)]
    return rows


def _write(root: str, name: str, lines: list[str]) -> None:
    with open(os.path.join(root, "meta", name), "w") as f:
        f.write("\n".join(lines) + "\n")
