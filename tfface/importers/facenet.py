"""facenet's released models as export sources: ``--format facenet_pytorch`` (a facenet-pytorch
``.pt`` state dict) and ``--format facenet_tf1`` (facenet's TF1 checkpoint: its directory or
``.index`` file, or the frozen ``.pb``), both mapped by :mod:`tfface.models.facenet_import`.

The embedder takes 160x160 RGB faces cut by facenet's MTCNN margin crop (margin 32, the size
facenet validates its 2018 models on) with ``fixed_image_standardization``; facenet is MIT.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from typing import Callable

import keras

from tfface.core.errors import UserError
from tfface.core.preprocessing import Standardize
from tfface.importers.registry import Imported, file_sha256, register_format
from tfface.models.facenet_import import import_facenet_pytorch, import_facenet_tf1_checkpoint

ARCH = "inception_resnet_v1"
IMAGE_SIZE = (160, 160)
MARGIN = 32.0
LICENCE = "MIT (davidsandberg/facenet; facenet-pytorch: MIT)"


def _tf1_path(path: str) -> str:
    """A checkpoint's ``.index`` file -> its prefix; a directory or ``.pb`` as given."""
    return path[: -len(".index")] if path.endswith(".index") else path


def _checksum(path: str) -> str:
    """SHA-256 of a file; of a checkpoint directory, of its sorted ``name:sha256`` lines."""
    if os.path.isdir(path):
        lines = [f"{name}:{file_sha256(os.path.join(path, name))}" for name in sorted(os.listdir(path))
                 if os.path.isfile(os.path.join(path, name))]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return file_sha256(path)


def _loader(fmt: str, read: Callable[[str], keras.Model], locate: Callable[[str], str]):
    def load(path: str, arch: str | None, options: dict) -> Imported:
        if arch not in (None, ARCH):
            raise UserError(f"--arch: {fmt} files hold {ARCH}, got {arch!r}")
        if options:
            raise UserError(f"--import: options {sorted(options)} do not apply to {fmt} files")
        try:
            backbone = read(locate(path))
        except (ValueError, KeyError, OSError, RuntimeError, pickle.UnpicklingError) as err:
            raise UserError(f"--import: '{path}' is not a facenet model ({str(err).splitlines()[0][:200]})") from None
        pixels = keras.Input((*IMAGE_SIZE, 3), name="pixels")
        embeddings = backbone(Standardize("fixed_image_standardization", name="standardize")(pixels))
        embedder = keras.Model(pixels, embeddings, name=f"{ARCH}_embedder")
        source = {"format": fmt, "file": os.path.basename(os.path.normpath(path)), "sha256": _checksum(path),
                  "arch": ARCH, "licence": LICENCE}
        return Imported(embedder, {"align": "facenet_crop", "image_size": list(IMAGE_SIZE), "margin": MARGIN}, source)

    return load


def _read_pytorch(path: str) -> keras.Model:
    return import_facenet_pytorch(path, input_shape=(*IMAGE_SIZE, 3))


def _read_tf1(path: str) -> keras.Model:
    return import_facenet_tf1_checkpoint(path, input_shape=(*IMAGE_SIZE, 3))


register_format("facenet_pytorch", _loader("facenet_pytorch", _read_pytorch, lambda p: p), (".pt",))
register_format("facenet_tf1", _loader("facenet_tf1", _read_tf1, _tf1_path), (".pb", ".index"))
