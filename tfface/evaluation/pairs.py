"""LFW ``pairs.txt``: reading it and resolving its image paths."""
from __future__ import annotations

import os

import numpy as np

from tfface.data.folders import IMAGE_EXTENSIONS
from tfface.errors import UserError, check_file

EXTENSIONS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)  # every format the image contract reads


def read_pairs(path: str) -> list[list[str]]:
    """Reads an LFW pairs file: a header line ``<folds> <pairs per fold>`` (or
    ``<pairs per fold>``), then ``name i j`` (same) or ``name1 i name2 j`` (different) lines."""
    check_file(path, "lfw_pairs")
    pairs = []
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    if not lines or not all(field.isdigit() for field in lines[0]):
        raise UserError(f"lfw_pairs: '{path}' does not start with LFW's header line '<folds> <pairs>'")
    for number, fields in enumerate(lines[1:], start=2):
        if len(fields) not in (3, 4):
            raise UserError(f"lfw_pairs: line {number} of '{path}' has {len(fields)} fields, expected 3 or 4")
        pairs.append(fields)
    return pairs


def _image_path(lfw_dir: str, name: str, number: str) -> str:
    stem = os.path.join(lfw_dir, name, f"{name}_{int(number):04d}")
    for ext in EXTENSIONS:
        if os.path.exists(f"{stem}.{ext}"):
            return f"{stem}.{ext}"
    return f"{stem}.{EXTENSIONS[0]}"


def get_paths(lfw_dir: str, pairs: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """Interleaved image paths (2N,) and ``issame`` (N,); a clear error if images are missing."""
    paths, issame = [], []
    for fields in pairs:
        if len(fields) == 3:
            a, b = _image_path(lfw_dir, fields[0], fields[1]), _image_path(lfw_dir, fields[0], fields[2])
        else:
            a, b = _image_path(lfw_dir, fields[0], fields[1]), _image_path(lfw_dir, fields[2], fields[3])
        paths += [a, b]
        issame.append(len(fields) == 3)
    missing = sorted({p for p in paths if not os.path.exists(p)})
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise UserError(
            f"lfw_dir: {len(missing)} image(s) named in the pairs file are missing under '{lfw_dir}': {shown}"
        )
    return paths, np.array(issame, bool)
