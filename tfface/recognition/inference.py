"""Using an exported tfface model: load a SavedModel, embed faces and face files.

    embedder = tfface.load_embedder("runs/quickstart")   # version, model or run directory
    embeddings = embedder.embed_files(["a.jpg", "b.jpg"])  # L2-normalised (2, D)
    embeddings = embedder.embed_files(["raw_photo.jpg"], align=True)  # detect + align first

Files are read through the image contract (:mod:`tfface.core.images`), exactly as training and the
SavedModel's ``embed_encoded`` signature read them. With ``align=True`` the most prominent face
of each photo is found by MTCNN and aligned exactly as the model's training faces were (the
alignment recorded in the export), then resized to the model's size as evaluation does.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from tfface.core import images
from tfface.core.errors import UserError
from tfface.evaluation.embeddings import embed_paths
from tfface.export import META_FILE, embedder_metadata


def _progress(total: int, desc: str, unit: str) -> tqdm:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False, mininterval=1.0)


class AlignedPhotos(NamedTuple):
    """:meth:`Embedder.align_files`' result: uint8 ``faces`` (K, h, w, 3), the boolean mask
    ``found`` (one per photo, K true), (photo, reason) of each photo ``skipped``, and the
    detection ``boxes`` (K, 4) x1, y1, x2, y2 of the faces in their photos."""

    faces: np.ndarray
    found: np.ndarray
    skipped: list[tuple[str, str]]
    boxes: np.ndarray


def resolve_saved_model(path: str) -> str:
    """Finds the SavedModel under ``path``: a version dir, a model dir (newest version), or a
    run dir (its ``export/<model>/<newest version>``)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    candidates = []
    for root, _, files in os.walk(path):
        if "saved_model.pb" in files and os.path.basename(root).isdigit():
            candidates.append(root)
    if not candidates:
        raise UserError(f"model: no SavedModel (saved_model.pb) found under '{path}'")
    return max(candidates, key=lambda p: (os.path.dirname(p), int(os.path.basename(p))))


def read_metadata(saved_model_dir: str) -> dict:
    """``assets.extra/tfface.json`` of an export ({} for a SavedModel tfface did not write)."""
    path = os.path.join(saved_model_dir, META_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


class Embedder:
    """A loaded tfface SavedModel: ``embed(uint8 images) -> L2-normalised embeddings``.

    Attributes:
        path: the version directory loaded.
        image_size: (height, width) of the faces the model takes.
        standardization: the model's in-graph standardization.
        metadata: the export's ``tfface.json`` (backbone, embedding size, alignment, fingerprint).
    """

    def __init__(self, saved_model_dir: str):
        self.path = resolve_saved_model(saved_model_dir)
        self._model = tf.saved_model.load(self.path)
        self._embed = self._model.signatures["serving_default"]
        self.metadata = read_metadata(self.path)
        self.image_size = tuple(int(v) for v in self._model.image_size.numpy())
        self.standardization = self._model.standardization.numpy().decode()
        self._detector = None

    @property
    def fingerprint(self) -> str | None:
        """The model's fingerprint (weights + how it reads faces), None for exports without one."""
        return self.metadata.get("fingerprint")

    @property
    def embedding_size(self) -> int:
        """D, the size of the embeddings."""
        return int(self._embed.structured_outputs["embeddings"].shape[-1])

    @property
    def alignment(self) -> dict | None:
        """How the training faces were aligned (``align``, ``image_size``, ``margin``), if known."""
        return self.metadata.get("alignment")

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (B, H, W, 3) at :attr:`image_size` -> (B, D) float32."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:3] != self.image_size or images.dtype != np.uint8:
            raise ValueError(
                f"images: expected uint8 (B, {self.image_size[0]}, {self.image_size[1]}, 3), "
                f"got {images.dtype} {images.shape}"
            )
        return self._embed(images=tf.constant(images))["embeddings"].numpy()

    def embed_faces(self, faces: np.ndarray, batch_size: int = 100) -> np.ndarray:
        """uint8 faces (N, h, w, 3) of any one size -> (N, D), resized to :attr:`image_size`
        first (as evaluation resizes aligned files)."""
        outputs = [np.zeros((0, self.embedding_size), np.float32)]
        with _progress(len(faces), "embed", "face") as bar:
            for start in range(0, len(faces), batch_size):
                outputs.append(self.embed(images.resize(faces[start:start + batch_size], self.image_size).numpy()))
                bar.update(len(outputs[-1]))
        return np.concatenate(outputs)

    def embed_files(self, paths: Sequence[str], batch_size: int = 100, align: bool = False) -> np.ndarray:
        """Embeds image files: (len(paths), D).

        Without ``align`` the files are taken as aligned faces, read and resized (see
        :func:`tfface.evaluation.embed_paths`). With ``align`` they are raw photos, aligned
        first by :meth:`align_files`; the rows of photos without a usable face are NaN (never
        an embedding of something else) and they are logged with the reason.
        """
        if not align:
            return embed_paths(self.embed, list(paths), self.image_size, batch_size)
        return self.embed_aligned(self.align_files(paths), batch_size)

    def embed_aligned(self, aligned: AlignedPhotos, batch_size: int = 100) -> np.ndarray:
        """Embeddings (photos, D) of :meth:`align_files`' faces; NaN rows for the photos without one."""
        embeddings = np.full((len(aligned.found), self.embedding_size), np.nan, np.float32)
        embeddings[aligned.found] = self.embed_faces(aligned.faces, batch_size)
        return embeddings

    def alignment_settings(self) -> tuple[str, int, float]:
        """(kind, side, margin) of the model's training faces, for :mod:`tfface_align.aligner`;
        a :class:`UserError` when the export records no alignment."""
        from tfface_align.aligner import ALIGNMENTS

        alignment = self.alignment or {}
        if alignment.get("align") not in ALIGNMENTS:
            made = f"on faces made as {alignment['align']!r}" if alignment else "on faces of unknown alignment"
            raise UserError(f"model: '{self.path}' was trained {made}, not on faces cut from photos, so it cannot "
                            f"find and align faces in photos; use a model made for real photos (e.g. python -m "
                            f"tfface.export --pretrained dlib_resnet_v1 ...), or give faces already cut and do not align (compare --noalign; no --align elsewhere)")
        return alignment["align"], int(alignment["image_size"][0]), float(alignment.get("margin") or 0)

    def align_files(self, photos: Sequence[str | np.ndarray], batch_size: int = 16,
                    detector=None) -> AlignedPhotos:
        """Detects and aligns the most prominent face of each photo (a path or an RGB uint8
        array) as the training faces were, with ``detector`` or :attr:`detector`.

        Photos without a face, or that cannot be read, are left out, logged and listed with the
        reason in ``skipped``; ``faces`` are at the recorded alignment size.
        """
        from tfface_align.aligner import align_photos
        from tfface_align.image_io import Photo, load_photo

        kind, side, margin = self.alignment_settings()
        detector = detector or self.detector
        photos = list(photos)
        found = np.zeros(len(photos), bool)
        faces, boxes, skipped = [], [], []
        bar = _progress(len(photos), "align", "photo")
        for start in range(0, len(photos), batch_size):
            chunk = photos[start:start + batch_size]
            loaded = [load_photo(p) if isinstance(p, str) else Photo(np.asarray(p, np.uint8), "ok", (), 1.0)
                      for p in chunk]
            for offset, (photo, result) in enumerate(zip(chunk, align_photos(loaded, detector, kind, side, margin))):
                if result.faces:
                    found[start + offset] = True
                    faces.append(result.faces[0].image)
                    boxes.append(result.faces[0].box[:4])
                else:
                    name = photo if isinstance(photo, str) else f"image #{start + offset}"
                    skipped.append((name, result.status.replace("_", " ")))
            bar.update(len(chunk))
        bar.close()
        if skipped:
            logging.warning("no face aligned in %d of %d photos: %s", len(skipped), len(photos),
                            ", ".join(f"{name} ({why})" for name, why in skipped))
        height, width = (int(v) for v in self.alignment["image_size"])
        return AlignedPhotos(np.stack(faces) if faces else np.zeros((0, height, width, 3), np.uint8), found, skipped,
                             np.asarray(boxes, np.float64).reshape(-1, 4))

    @property
    def detector(self):
        """The MTCNN face detector of :meth:`align_files` (built on first use)."""
        if self._detector is None:
            from tfface_align.mtcnn import MTCNN

            self._detector = MTCNN()
        return self._detector


class KerasEmbedder(Embedder):
    """An :class:`Embedder` of a ``.keras`` embedder file (no export needed)."""

    def __init__(self, keras_file: str):
        from tfface.export.sources import load_for_export

        model, _ = load_for_export(keras_file)
        self.path = keras_file
        self._model = model
        self.metadata = embedder_metadata(model)
        self.image_size = tuple(self.metadata["image_size"])
        self.standardization = self.metadata["standardization"]

        self._detector = None

        @tf.function(input_signature=[tf.TensorSpec([None, *self.image_size, 3], tf.uint8, name="images")])
        def embed(images):  # the keyword Embedder.embed passes
            embeddings = model(tf.cast(images, tf.float32), training=False)
            return {"embeddings": tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)}

        self._embed = embed.get_concrete_function()  # structured_outputs, like a loaded signature


class PhotoEmbedder:
    """A loaded end-to-end export (``tfface-export --with_alignment``): photos -> faces -> embeddings.

    Attributes:
        path: the version directory loaded.
        metadata: the export's ``tfface.json`` (alignment, detector settings, max_faces, fingerprint).
    """

    def __init__(self, saved_model_dir: str):
        self.path = resolve_saved_model(saved_model_dir)
        self.metadata = read_metadata(self.path)
        self._run = tf.saved_model.load(self.path).signatures["serving_default"]

    @property
    def fingerprint(self) -> str | None:
        """The embedder's fingerprint (weights + how it reads faces)."""
        return self.metadata.get("fingerprint")

    @property
    def alignment(self) -> dict | None:
        """How the faces are aligned in the graph (``align``, ``image_size``, ``margin``)."""
        return self.metadata.get("alignment")

    def embed_photos(self, paths: Sequence[str], batch_size: int = 8) -> list[dict[str, np.ndarray]]:
        """Detects, aligns and embeds the faces of photo files.

        Returns, per photo, ``boxes`` (N, 4) x1, y1, x2, y2, ``scores`` (N,), ``landmarks``
        (N, 5, 2) and L2-normalised ``embeddings`` (N, D), most probable face first (at most the
        export's ``max_faces``). Raises :class:`UserError` naming a file that is not an image.
        """
        results = []
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start:start + batch_size])
            encoded = []
            for path in chunk:
                data = images.read_bytes(path)
                try:
                    encoded.append(images.canonical_bytes(data))
                except ValueError as err:
                    raise UserError(f"image: cannot decode '{path}' ({err})") from None
            out = {k: v.numpy() for k, v in self._run(image_bytes=tf.constant(encoded)).items()}
            for i, count in enumerate(out.pop("num_faces")):
                results.append({name: value[i, :count] for name, value in out.items()})
        return results


def load_embedder(path: str) -> Embedder | PhotoEmbedder:
    """Loads an exported tfface SavedModel (version, model or run directory) or a ``.keras`` file.

    End-to-end exports (``--with_alignment``) load as a :class:`PhotoEmbedder`.
    """
    if path.endswith(".keras"):
        return KerasEmbedder(path)
    version = resolve_saved_model(path)
    if read_metadata(version).get("kind") == "photos":
        return PhotoEmbedder(version)
    return Embedder(version)
