"""facenet's SVM classifier on a model's embeddings, saved safely and tied to that model.

    clf = train_classifier(embeddings, labels, class_names, embedder.fingerprint)
    save_classifier(clf, "people.skops")              # skops, never pickle; atomic
    clf = load_classifier("people.skops", embedder.fingerprint)   # refuses another model's file
    names, probabilities = clf.predict(embeddings, unknown_threshold=0.5)

The SVM sees the embeddings multiplied by one scale fitted on the training embeddings (their
root-mean-square distance to their mean becomes 1), so facenet's ``C=1`` fits the same way for
every model: unit embeddings spread over the sphere (facenet) are left nearly as they are, while
models whose faces all lie close together (dlib: same-person squared distances about 0.03-0.05)
no longer leave the SVM underfitted. Names are the SVM's own decision (``SVC.predict``); the
Platt probabilities (fitted by internal cross-validation, rough with few photos per person)
only give the probability of that name, compared with ``unknown_threshold``.

A classifier file is a skops archive of a dict holding the ``SVC``, the feature scale, the class names, the
fingerprint of the embedding model (:attr:`tfface.recognition.inference.Embedder.fingerprint`: backbone,
embedding size, preprocessing, alignment and a hash of the weights) and a format tag. Loading
accepts only the types such a file contains, so a pickle, another program's skops file or a
tampered one is refused with a one-line :class:`~tfface.core.errors.UserError`.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
import warnings
import zipfile
from typing import Sequence

import numpy as np
from sklearn.svm import SVC

from tfface.core import images
from tfface.data import folders
from tfface.core.errors import UserError
from tfface.recognition.inference import Embedder

FORMAT = "tfface-classifier"
VERSION = 2
#: Format versions this tfface reads; version 1 files (no scale) were trained on unscaled embeddings.
READABLE_VERSIONS = (1, 2)
UNKNOWN = "Unknown"
# Every type a classifier file may contain; anything else in the file is refused unloaded.
TRUSTED_TYPES = ["sklearn.svm._classes.SVC", "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.int32"]


@dataclasses.dataclass
class FaceClassifier:
    """An SVM over embeddings of one model (``fingerprint``) times ``scale``, predicting ``class_names``."""

    model: SVC
    class_names: list[str]
    fingerprint: str
    embedding_size: int
    scale: float = 1.0

    def predict(self, embeddings: np.ndarray, unknown_threshold: float = 0.0) -> tuple[list[str], np.ndarray]:
        """The SVM's class name per embedding and that name's probability; ``Unknown`` where the
        probability is below ``unknown_threshold``."""
        embeddings = np.asarray(embeddings, np.float64)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"embeddings: expected (N, {self.embedding_size}), got {embeddings.shape}")
        if not len(embeddings):
            return [], np.zeros(0)
        features = embeddings * self.scale
        labels = self.model.predict(features)  # the argmax of predict_proba can disagree with it on few photos
        columns = np.searchsorted(self.model.classes_, labels)
        probabilities = self.model.predict_proba(features)[np.arange(len(labels)), columns]
        names = [self.class_names[label] if p >= unknown_threshold else UNKNOWN
                 for label, p in zip(labels, probabilities)]
        return names, probabilities


def train_classifier(
    embeddings: np.ndarray, labels: Sequence[int], class_names: Sequence[str], fingerprint: str, seed: int = 666
) -> FaceClassifier:
    """Fits facenet's ``SVC(kernel="linear", probability=True)`` on the embeddings times
    :func:`feature_scale`; ``labels`` index ``class_names``."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise UserError(f"data_dir: an SVM needs at least 2 identities with images, got {len(np.unique(labels))}")
    if not fingerprint:
        raise UserError("model: it records no fingerprint (not exported by tfface); re-export it with tfface.export")
    embeddings = np.asarray(embeddings, np.float64)
    scale = feature_scale(embeddings)
    model = SVC(kernel="linear", probability=True, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn 1.9 deprecates probability=True (removal in 1.11)
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(embeddings * scale, labels)
    return FaceClassifier(model, list(class_names), fingerprint, int(embeddings.shape[1]), scale)


def feature_scale(embeddings: np.ndarray) -> float:
    """1 / the root-mean-square distance of ``embeddings`` to their mean (1 where they all coincide).

    A linear SVM with an intercept is blind to a shift of the features, but scaling them by ``s``
    acts as ``C * s**2``: this scale gives every model's embeddings the spread under which facenet
    chose ``C=1``."""
    spread = float(np.sqrt(np.mean(np.sum((embeddings - embeddings.mean(axis=0)) ** 2, axis=1))))
    return 1.0 / spread if spread > 0 else 1.0


def save_classifier(classifier: FaceClassifier, path: str) -> None:
    """Writes ``classifier`` to ``path`` as a skops file, through a temporary file and a rename."""
    import skops.io

    state = {
        "format": FORMAT, "version": VERSION, "model": classifier.model, "scale": float(classifier.scale),
        "class_names": classifier.class_names,
        "fingerprint": classifier.fingerprint, "embedding_size": classifier.embedding_size,
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        skops.io.dump(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_classifier(path: str, fingerprint: str | None) -> FaceClassifier:
    """Reads a classifier written by :func:`save_classifier` for the model of ``fingerprint``."""
    import skops.io

    if not os.path.isfile(path):
        raise UserError(f"classifier_filename: '{path}' does not exist")
    what = f"classifier_filename: '{path}'"
    if not zipfile.is_zipfile(path):
        raise UserError(f"{what} is not a tfface classifier (not a skops file; pickles are never loaded)")
    try:
        untrusted = set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
        if untrusted:
            raise UserError(f"{what} holds types a tfface classifier never contains ({', '.join(sorted(untrusted))}); "
                            f"refusing to load it")
        state = skops.io.load(path, trusted=TRUSTED_TYPES)
    except UserError:
        raise
    except Exception as err:  # a damaged archive fails in zipfile, json or skops with many types
        raise UserError(f"{what} is damaged or not a tfface classifier ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("model"), SVC):
        raise UserError(f"{what} is a skops file but not a tfface classifier")
    if state.get("version") not in READABLE_VERSIONS:
        raise UserError(f"{what} has format version {state.get('version')}, this tfface reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}")
    scale = state.get("scale") if state["version"] > 1 else 1.0
    if not isinstance(scale, float) or not np.isfinite(scale) or scale <= 0:
        raise UserError(f"{what} holds feature scale {scale!r}, expected a positive number")
    if fingerprint != state["fingerprint"]:
        raise UserError(f"{what} was trained on embeddings of another model (fingerprint {state['fingerprint']}, "
                        f"this model: {fingerprint}); train it again with this model")
    return FaceClassifier(state["model"], list(state["class_names"]), state["fingerprint"],
                          int(state["embedding_size"]), scale)


def select_dataset(
    data_dir: str, min_nrof_images_per_class: int = 1, split: str | None = None,
    nrof_train_images_per_class: int = 10, seed: int = 666,
) -> tuple[list[folders.ImageClass], list[str]]:
    """facenet's classifier data: identity folders of ``data_dir`` with at least
    ``min_nrof_images_per_class`` images (the others are returned as skipped names); with
    ``split`` ("train" or "test"), that side of facenet's per-identity random split."""
    dataset = folders.get_dataset(data_dir)
    kept = folders.filter_min_images(dataset, max(min_nrof_images_per_class, 1))
    skipped = sorted({cls.name for cls in dataset} - {cls.name for cls in kept})
    if split is not None:
        train, test = folders.split_by_count(kept, nrof_train_images_per_class, seed=seed)
        kept = [cls for cls in (train if split == "train" else test) if len(cls)]
    if not kept:
        raise UserError(f"data_dir: no identity folder of '{data_dir}' has images to use "
                        f"(min_nrof_images_per_class={min_nrof_images_per_class}, {len(skipped)} skipped)")
    return kept, skipped


def embed_dataset(
    embedder: Embedder, dataset: Sequence[folders.ImageClass], align: bool = False, batch_size: int = 100
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embeddings (K, D) and labels (K,) of the usable images of ``dataset``, and one line per
    image left out (unreadable, or no face found with ``align``)."""
    paths = [path for cls in dataset for path in cls.image_paths]
    labels = np.array([label for label, cls in enumerate(dataset) for _ in cls.image_paths], np.int64)
    failures: list[str] = []
    if align:
        faces, found = embedder.align_files(paths)[:2]
        failures = [f"{path}: no face found" for path, ok in zip(paths, found) if not ok]
    else:
        faces = []
        found = np.zeros(len(paths), bool)
        for i, path in enumerate(paths):
            try:
                faces.append(images.load(path, embedder.image_size))
                found[i] = True
            except UserError as err:
                failures.append(str(err))
        faces = np.stack(faces) if faces else np.zeros((0, *embedder.image_size, 3), np.uint8)
    return embedder.embed_faces(faces, batch_size), labels[found], failures
