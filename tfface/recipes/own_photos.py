"""Train on your own photos, end to end: align -> train -> export -> verify unseen people -> classify.

The steps of :mod:`tfface.recipes.orl` as functions, for any folder of identity folders:

1. :func:`lfw_layout` copies the photos of some identities into LFW's naming
   (``<name>/<name>_0001.<ext>``) so that pairs files can name them;
2. ``python -m tfface_align.align_dataset_mtcnn`` aligns the photos (:func:`align_command`;
   training identities into TFRecords, unseen ones into folders);
3. ``python -m tfface.train_softmax`` trains on the TFRecords (:func:`train_command`);
4. :func:`verification` builds pairs of the unseen identities, runs the LFW protocol on the
   exported model and, on the same pairs and folds, the raw-pixel and eigenfaces baselines;
5. :func:`classification` trains facenet's SVM on the first photos of each unseen person and
   classifies the others;
6. :func:`transfer` verifies pairs of raw photos of other people, aligned by the model itself.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from tfface.core import images
from tfface.recognition.classification import embed_dataset, load_classifier, save_classifier, train_classifier
from tfface.data.folders import IMAGE_EXTENSIONS, ImageClass
from tfface.core.errors import UserError
from tfface.evaluation import baselines
from tfface.evaluation.pairs import get_paths, make_pairs, read_pairs, write_pairs
from tfface.evaluation.photo_pairs import embed_faces, evaluate_photo_pairs, read_csv_pairs, unique_rows
from tfface.evaluation.verification import evaluate
from tfface.recognition.inference import Embedder


@dataclasses.dataclass
class Stages:
    """Wall-clock time of each named stage, in order."""

    seconds: dict = dataclasses.field(default_factory=dict)

    def run(self, name: str, function, *args, **kwargs):
        """Runs ``function(*args, **kwargs)`` as stage ``name``, printing when it starts and ends."""
        print(f"== {name}", flush=True)
        start = time.time()
        result = function(*args, **kwargs)
        self.seconds[name] = time.time() - start
        print(f"== {name}: {self.seconds[name]:.1f} s", flush=True)
        return result


def _number(filename: str) -> tuple:
    """Natural sort key: ``2.pgm`` before ``10.pgm``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", filename))


def lfw_layout(source_dir: str, output_dir: str, identities: Sequence[str]) -> dict[str, int]:
    """Copies the photos of ``identities`` (``source_dir/<name>/*``, natural order) to
    ``output_dir/<name>/<name>_NNNN<ext>``, numbered from 1; returns photos per identity."""
    counts = {}
    for name in identities:
        folder = os.path.join(source_dir, name)
        if not os.path.isdir(folder):
            raise UserError(f"photos: identity folder '{folder}' does not exist")
        photos = sorted((f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)), key=_number)
        if not photos:
            raise UserError(f"photos: identity folder '{folder}' has no images")
        os.makedirs(os.path.join(output_dir, name), exist_ok=True)
        for number, photo in enumerate(photos, start=1):
            target = os.path.join(output_dir, name, f"{name}_{number:04d}{os.path.splitext(photo)[1].lower()}")
            if not os.path.exists(target):
                shutil.copyfile(os.path.join(folder, photo), f"{target}.tmp")
                os.replace(f"{target}.tmp", target)
        counts[name] = len(photos)
    return counts


def aligned_numbers(aligned_dir: str) -> dict[str, list[int]]:
    """Photo numbers per identity present in an aligned LFW-layout folder (misses are absent)."""
    numbers = {}
    for name in sorted(os.listdir(aligned_dir)):
        folder = os.path.join(aligned_dir, name)
        if os.path.isdir(folder) and not name.startswith("."):
            found = [re.fullmatch(rf"{re.escape(name)}_(\d+)\.png", f) for f in os.listdir(folder)]
            numbers[name] = sorted(int(m.group(1)) for m in found if m)
    return numbers


def align_command(photos_dir: str, aligned_dir: str, alignment: str, image_size: int, margin: float,
                  output_format: str) -> list[str]:
    """The ``align_dataset_mtcnn`` command line of the recipe."""
    return [sys.executable, "-m", "tfface_align.align_dataset_mtcnn", photos_dir, aligned_dir, f"--align={alignment}",
            f"--image_size={image_size}", f"--margin={margin}", f"--output_format={output_format}"]


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def train_command(flagfile: str, data_dir: str, models_base_dir: str, subdir: str, overrides: Sequence[str] = ()
                  ) -> list[str]:
    """The ``train_softmax`` command line of the recipe (later flags override the flagfile's)."""
    return [sys.executable, "-m", "tfface.train_softmax", f"--flagfile={flagfile}", f"--data_dir={data_dir}",
            f"--models_base_dir={models_base_dir}", f"--subdir={subdir}", *overrides]


def export_pretrained(name: str, export_dir: str) -> str:
    """Exports pretrained model ``name`` (as it is) to ``export_dir/<name>/1`` once; returns that version."""
    from tfface.export.saved_model import export_saved_model
    from tfface.importers import load_pretrained

    version = os.path.join(export_dir, name, "1")
    if not os.path.isfile(os.path.join(version, "saved_model.pb")):
        embedder, alignment, source = load_pretrained(name)
        export_saved_model(embedder, export_dir, name, 1, alignment, source=source)
    return version


def _faces(paths: Sequence[str], image_size: tuple[int, int] | None = None) -> np.ndarray:
    return np.stack([images.load(path, image_size) for path in paths])


@dataclasses.dataclass
class Verification:
    """Mean 10-fold accuracy of the model and of the baselines on the same pairs and folds."""

    model: float
    model_std: float
    raw_pixels: float
    raw_pixels_aligned: float
    eigenfaces: float
    num_pairs: int
    summary_lines: list[str]


def verification(
    embedder: Embedder, aligned_dir: str, photos_dir: str, train_photos_dir: str, pairs_file: str,
    use_flipped_images: bool = True, seed: int = 0,
) -> Verification:
    """Writes the pairs of ``aligned_dir`` to ``pairs_file`` and evaluates on them: the model
    (its aligned faces, facenet's flip option), raw pixels of the original photos
    (``photos_dir``, the same names) and of the aligned faces, and eigenfaces (PCA-50, whitened)
    fitted on the original photos of the training identities (``train_photos_dir``)."""
    write_pairs(pairs_file, make_pairs(aligned_numbers(aligned_dir), seed=seed))
    pairs = read_pairs(pairs_file)
    aligned_paths, issame = get_paths(aligned_dir, pairs)
    photo_paths, _ = get_paths(photos_dir, pairs)
    unique, rows = unique_rows(aligned_paths)
    aligned = _faces(unique)
    result = evaluate(embed_faces(embedder, aligned, use_flipped_images)[rows], issame)
    unique_photos, photo_rows = unique_rows(photo_paths)
    photos = _faces(unique_photos, images.load(photo_paths[0]).shape[:2])[photo_rows]  # all at one size
    train_paths = [os.path.join(root, f) for root, _, files in os.walk(train_photos_dir) for f in sorted(files)
                   if f.lower().endswith(IMAGE_EXTENSIONS)]
    eigen = baselines.Eigenfaces(50, seed).fit(_faces(train_paths, photos.shape[1:3]))
    return Verification(
        model=float(result.accuracy.mean()), model_std=float(result.accuracy.std()),
        raw_pixels=float(evaluate(baselines.raw_pixels(photos), issame).accuracy.mean()),
        raw_pixels_aligned=float(evaluate(baselines.raw_pixels(aligned[rows]), issame).accuracy.mean()),
        eigenfaces=float(evaluate(eigen.embed(photos), issame).accuracy.mean()),
        num_pairs=len(issame), summary_lines=result.summary_lines(),
    )


def classification(embedder: Embedder, aligned_dir: str, classifier_file: str, nrof_train_images_per_class: int = 5,
                   seed: int = 666) -> float:
    """facenet's SVM trained on photos 1..n of each identity of ``aligned_dir`` (saved to
    ``classifier_file`` and read back), accuracy on the other photos."""
    train, test = [], []
    for name, numbers in aligned_numbers(aligned_dir).items():
        path = os.path.join(aligned_dir, name, "{}_{:04d}.png")
        train.append(ImageClass(name, [path.format(name, n) for n in numbers if n <= nrof_train_images_per_class]))
        test.append(ImageClass(name, [path.format(name, n) for n in numbers if n > nrof_train_images_per_class]))
    embeddings, labels, _ = embed_dataset(embedder, train)
    save_classifier(train_classifier(embeddings, labels, [c.name for c in train], embedder.fingerprint, seed),
                    classifier_file)
    classifier = load_classifier(classifier_file, embedder.fingerprint)
    embeddings, labels, _ = embed_dataset(embedder, test)
    predicted, _ = classifier.predict(embeddings)
    return float(np.mean([name == test[label].name for name, label in zip(predicted, labels)]))


@dataclasses.dataclass
class Transfer:
    """Verification of raw photos of people unlike the training ones (facenet's folds)."""

    accuracy: float
    accuracy_std: float
    auc: float  # of the pair distances (facenet's fold-averaged ROC is undefined on one-class folds)
    num_pairs: int
    same_pairs: int
    dropped_pairs: int
    photos_without_face: list[str]


def transfer(embedder: Embedder, pairs_csv: str, nrof_folds: int = 10) -> Transfer:
    """The ``file_x,file_y,Decision`` pairs of ``pairs_csv`` (raw photos), each photo aligned as
    the model's training faces were and embedded with its mirror image; pairs with a photo
    without a face are dropped and counted."""
    paths, issame = read_csv_pairs(pairs_csv)
    found = evaluate_photo_pairs(embedder, paths, issame, use_flipped_images=True, nrof_folds=nrof_folds)
    result = found.result
    auc = roc_auc_score(result.issame, -result.distances)
    return Transfer(float(result.accuracy.mean()), float(result.accuracy.std()), float(auc),
                    found.num_pairs, int(result.issame.sum()), found.dropped_pairs,
                    [os.path.relpath(p, os.path.dirname(pairs_csv)) for p in found.photos_without_face])
