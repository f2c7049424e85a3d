"""facenet's one-folder-per-identity datasets: listing, splitting, conversion to TFRecords.

Layout: ``data_dir/<identity>/<image files>``. Identities are sorted by name and get dense
labels 0..C-1. Unreadable files never stop a conversion: they are skipped, counted and
listed in ``conversion_report.json``.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfface.core import images
from tfface.data import tfrecord
from tfface.core.errors import UserError, check_choice, check_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp")
SPLIT_MODES = ("SPLIT_CLASSES", "SPLIT_IMAGES")
REPORT_FILE = "conversion_report.json"


@dataclasses.dataclass
class ImageClass:
    """One identity: its name and the paths of its images."""

    name: str
    image_paths: list[str]

    def __len__(self) -> int:
        return len(self.image_paths)


def get_dataset(data_dir: str) -> list[ImageClass]:
    """Lists ``data_dir/<identity>/*`` (image extensions only), identities sorted by name."""
    check_dir(data_dir, "data_dir")
    classes = []
    for name in sorted(os.listdir(data_dir)):
        folder = os.path.join(data_dir, name)
        if not os.path.isdir(folder):
            continue
        paths = [
            os.path.join(folder, f)
            for f in sorted(os.listdir(folder))
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
        ]
        classes.append(ImageClass(name, paths))
    if not classes:
        raise UserError(f"data_dir: '{data_dir}' has no identity sub-folders (expected data_dir/<identity>/<images>)")
    return classes


def filter_min_images(dataset: Sequence[ImageClass], min_nrof_images_per_class: int) -> list[ImageClass]:
    """Keeps identities with at least ``min_nrof_images_per_class`` images."""
    return [cls for cls in dataset if len(cls) >= min_nrof_images_per_class]


def split_dataset(
    dataset: Sequence[ImageClass],
    split_ratio: float,
    min_nrof_images_per_class: int = 1,
    mode: str = "SPLIT_IMAGES",
    seed: int = 0,
) -> tuple[list[ImageClass], list[ImageClass]]:
    """facenet's train/validation split; ``split_ratio`` is the validation fraction.

    ``SPLIT_CLASSES``: whole identities go to validation (open-set). ``SPLIT_IMAGES``: each
    identity keeps ``floor(n * (1 - split_ratio))`` images for training (at least one image
    left for validation); identities with fewer than ``min_nrof_images_per_class`` training
    images are dropped from both sides.
    """
    check_choice(mode, SPLIT_MODES, "validation_set_split_mode")
    if not 0.0 <= split_ratio < 1.0:
        raise UserError(f"validation_set_split_ratio: expected a value in [0, 1), got {split_ratio}")
    rng = np.random.RandomState(seed)
    if mode == "SPLIT_CLASSES":
        order = rng.permutation(len(dataset))
        split = int(round(len(dataset) * (1.0 - split_ratio)))
        return [dataset[i] for i in order[:split]], [dataset[i] for i in order[split:]]
    train, val = [], []
    for cls in dataset:
        paths = list(rng.permutation(cls.image_paths))
        split = min(int(math.floor(len(paths) * (1.0 - split_ratio))), len(paths) - 1)
        if split >= min_nrof_images_per_class:
            train.append(ImageClass(cls.name, paths[:split]))
            val.append(ImageClass(cls.name, paths[split:]))
    return train, val


def split_by_count(
    dataset: Sequence[ImageClass],
    nrof_train_images_per_class: int,
    min_nrof_images_per_class: int = 1,
    seed: int = 0,
) -> tuple[list[ImageClass], list[ImageClass]]:
    """facenet classifier's split: ``nrof_train_images_per_class`` random images per identity
    for training, the rest for testing; identities below ``min_nrof_images_per_class`` dropped."""
    rng = np.random.RandomState(seed)
    train, test = [], []
    for cls in filter_min_images(dataset, min_nrof_images_per_class):
        paths = list(rng.permutation(cls.image_paths))
        train.append(ImageClass(cls.name, paths[:nrof_train_images_per_class]))
        test.append(ImageClass(cls.name, paths[nrof_train_images_per_class:]))
    return train, test


def read_image_file(path: str) -> tuple[bytes, str, int, int]:
    """Validates one image file and returns ``(encoded, format, height, width)`` for the schema.

    JPEGs and 8-bit grey/RGB PNGs keep their original bytes (:func:`tfface.core.images.decode` turns
    a JPEG upright by its EXIF orientation when it is read); anything else OpenCV or TF decodes
    (PGM, BMP, TIFF, 16-bit, alpha...) is stored as the 8-bit RGB PNG of what
    :func:`tfface.core.images.decode` makes of it. ``height``/``width`` are those of the upright image.
    Raises ``ValueError`` with the reason when the file cannot be used.
    """
    with open(path, "rb") as f:
        raw = f.read()
    data = images.canonical_bytes(raw)
    try:
        image = images.decode(data)
    except tf.errors.InvalidArgumentError:
        raise ValueError("corrupt image data") from None
    height, width = int(image.shape[0]), int(image.shape[1])
    fmt = images.sniff(data)
    plain_png = fmt == "png" and data[24:26] in (b"\x08\x00", b"\x08\x02")  # IHDR: 8-bit grey / RGB
    if fmt == "jpeg" or plain_png:
        return data, fmt, height, width
    return tf.io.encode_png(image).numpy(), "png", height, width


def dataset_to_tfrecords(
    dataset: Sequence[ImageClass],
    output_dir: str,
    num_shards: int = 4,
    alignment: str = "none",
    num_threads: int = 4,
    sequences: bool = False,
) -> dict:
    """Converts identity folders to TFRecord shards; returns ``dataset_info.json``'s content.

    Bad files are skipped; ``output_dir/conversion_report.json`` lists them with the reason.
    With ``sequences`` every folder is one unlabelled face sequence (SeqFace, e.g. the frames
    of one video track): its frames get ``image/sequence_id`` = the folder's index (as label
    too) and ``dataset_info.json`` records ``num_sequences``.
    """
    class_names = [cls.name for cls in dataset]
    jobs = [(label, path) for label, cls in enumerate(dataset) for path in cls.image_paths]
    skipped: list[dict] = []
    sizes: set[tuple[int, int]] = set()
    os.makedirs(output_dir, exist_ok=True)
    writer = tfrecord.ShardedWriter(output_dir, num_shards, class_names, alignment=alignment)
    with writer, concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        for (label, path), result in zip(jobs, pool.map(_try_read, (p for _, p in jobs))):
            if isinstance(result, str):
                skipped.append({"path": path, "reason": result})
                logging.warning("skipping %s: %s", path, result)
                continue
            encoded, fmt, height, width = result
            sizes.add((height, width))
            writer.write(
                tfrecord.make_example(
                    encoded, label, height, width, fmt, text=class_names[label], source_id=path,
                    sequence_id=label if sequences else -1,
                )
            )
        writer.info["image_size"] = list(sizes.pop()) if len(sizes) == 1 else None
        writer.info["num_skipped"] = len(skipped)
        if sequences:
            writer.info["num_sequences"] = len(class_names)
    tfrecord.write_json_atomic(
        os.path.join(output_dir, REPORT_FILE),
        {"num_files": len(jobs), "num_written": len(jobs) - len(skipped), "skipped": skipped},
    )
    logging.info(
        "converted %d images of %d identities to %s (%d skipped, see %s)",
        len(jobs) - len(skipped), len(class_names), output_dir, len(skipped), REPORT_FILE,
    )
    return tfrecord.read_dataset_info(output_dir)


def _try_read(path: str) -> tuple[bytes, str, int, int] | str:
    try:
        return read_image_file(path)
    except (OSError, ValueError) as err:
        return str(err) or type(err).__name__

