"""LFW ``pairs.txt``: reading it and resolving its image paths."""
from __future__ import annotations

import itertools
import os
from typing import Mapping, Sequence

import numpy as np

from tfface.data.folders import IMAGE_EXTENSIONS
from tfface.core.errors import UserError, check_file

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
    if len(lines[0]) == 2:  # "<folds> <n>": each fold holds n same and n different pairs
        folds, per_fold = (int(v) for v in lines[0])
        if len(pairs) not in (2 * folds * per_fold, folds * per_fold):
            raise UserError(
                f"lfw_pairs: the header of '{path}' announces {folds} folds of {per_fold} same + {per_fold} "
                f"different pairs ({2 * folds * per_fold} lines) but the file has {len(pairs)} pair lines"
            )
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


def make_pairs(
    images: Mapping[str, Sequence[int]], nrof_folds: int = 10, seed: int = 0
) -> list[list[str]]:
    """Verification pairs in LFW's order: every same-person pair of ``images`` (identity ->
    image numbers) and as many distinct different-person pairs, drawn with ``seed``.

    Both kinds are shuffled and dealt into ``nrof_folds`` folds of ``n`` same-person then ``n``
    different-person pairs (``n`` = same-person pairs // folds; the remainder is left out), so
    facenet's ``KFold(shuffle=False)`` over the list sees balanced folds.
    """
    rng = np.random.RandomState(seed)
    names = sorted(name for name, numbers in images.items() if numbers)
    same = [[name, str(a), str(b)] for name in names for a, b in itertools.combinations(sorted(images[name]), 2)]
    per_fold = len(same) // nrof_folds
    if per_fold < 1 or len(names) < 2:
        raise UserError(f"pairs: {len(same)} same-person pairs over {len(names)} identities cannot fill "
                        f"{nrof_folds} folds (need 2+ identities with 2+ images)")
    different: set[tuple] = set()
    while len(different) < per_fold * nrof_folds:
        first, second = rng.choice(len(names), 2, replace=False)
        a = (names[first], int(rng.choice(images[names[first]])))
        b = (names[second], int(rng.choice(images[names[second]])))
        different.add(min(a, b) + max(a, b))
    different_pairs = [[n1, str(i1), n2, str(i2)] for n1, i1, n2, i2 in sorted(different)]
    same = [same[i] for i in rng.permutation(len(same))]
    different_pairs = [different_pairs[i] for i in rng.permutation(len(different_pairs))]
    pairs = []
    for fold in range(nrof_folds):
        chunk = slice(fold * per_fold, (fold + 1) * per_fold)
        pairs += same[chunk] + different_pairs[chunk]
    return pairs


def write_pairs(path: str, pairs: Sequence[Sequence[str]], nrof_folds: int = 10) -> None:
    """Writes ``pairs`` (from :func:`make_pairs`) as an LFW ``pairs.txt``, atomically."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{nrof_folds}\t{len(pairs) // (2 * nrof_folds)}\n")
        f.writelines("\t".join(fields) + "\n" for fields in pairs)
    os.replace(tmp, path)
