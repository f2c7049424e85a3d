"""The one TFRecord schema of tfface: writer (sharded, atomic) and parser.

Every producer (the aligner, the folder converter, the synthetic generator, the ``.rec``
converter) writes examples through :class:`ShardedWriter`; every consumer parses them with
:func:`parse_example`. Features:

=====================  ===========  ==========================================================
key                    type         meaning
=====================  ===========  ==========================================================
image/encoded          bytes        JPEG or PNG bytes
image/format           bytes        ``b"jpeg"`` or ``b"png"``
image/height, width    int64        pixel size of the encoded image
image/class/label      int64        dense label 0..C-1
image/class/text       bytes        identity name
image/source_id        bytes        original path
image/sequence_id      int64        sequence of a video frame (SeqFace), -1 otherwise
image/landmarks        float32[10]  optional: x1, y1, ..., x5, y5 in encoded-image pixels
image/bbox             float32[4]   optional: x1, y1, x2, y2 in original-image pixels
=====================  ===========  ==========================================================

Shards are written under a temporary name and renamed when complete; ``dataset_info.json``
(class names and counts, examples per shard, image size, alignment) is written beside them,
also atomically. A directory holds one dataset.
"""
from __future__ import annotations

import glob
import json
import os
import uuid
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfface.core.errors import UserError

INFO_FILE = "dataset_info.json"
SHARD_PATTERN = "{prefix}-{index:05d}-of-{count:05d}.tfrecord"
SCHEMA_VERSION = 1

FEATURE_SPEC = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=b"jpeg"),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "image/sequence_id": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/landmarks": tf.io.FixedLenFeature([10], tf.float32, default_value=[-1.0] * 10),
    "image/bbox": tf.io.FixedLenFeature([4], tf.float32, default_value=[-1.0] * 4),
}


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def make_example(
    encoded: bytes,
    label: int,
    height: int,
    width: int,
    image_format: str = "jpeg",
    text: str = "",
    source_id: str = "",
    sequence_id: int = -1,
    landmarks: Sequence[float] | np.ndarray | None = None,
    bbox: Sequence[float] | np.ndarray | None = None,
) -> tf.train.Example:
    """Builds one ``tf.train.Example`` in the tfface schema."""
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format: expected 'jpeg' or 'png', got {image_format!r}")
    feature = {
        "image/encoded": _bytes([encoded]),
        "image/format": _bytes([image_format.encode()]),
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/class/label": _ints([label]),
        "image/class/text": _bytes([text.encode()]),
        "image/source_id": _bytes([source_id.encode()]),
        "image/sequence_id": _ints([sequence_id]),
    }
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float32).reshape(-1)
        if landmarks.size != 10:
            raise ValueError(f"landmarks: expected 10 values (5 points), got {landmarks.size}")
        feature["image/landmarks"] = _floats(landmarks)
    if bbox is not None:
        bbox = np.asarray(bbox, np.float32).reshape(-1)
        if bbox.size != 4:
            raise ValueError(f"bbox: expected 4 values (x1, y1, x2, y2), got {bbox.size}")
        feature["image/bbox"] = _floats(bbox)
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized example (a scalar string tensor) into the schema's tensors."""
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)


def write_json_atomic(path: str, obj: object) -> None:
    """Writes ``obj`` as JSON to ``path`` through a temporary file and a rename."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class ShardedWriter:
    """Writes examples round-robin into ``num_shards`` TFRecord files, atomically.

    Use as a context manager. Shards are written as ``<name>.tmp-<id>`` and renamed to
    ``<prefix>-NNNNN-of-MMMMM.tfrecord`` only when the writer closes without error; on error the
    temporary files are removed, so a reader never sees a partial dataset.

    Args:
        output_dir: directory to write into (created if missing).
        num_shards: number of shard files.
        class_names: identity name of every dense label, index = label.
        image_size: (height, width) of the stored images, or None when sizes vary.
        alignment: how the images were aligned (e.g. ``"arcface"``, ``"facenet_crop"``).
        prefix: file-name prefix of the shards.
        extra_info: more keys to store in ``dataset_info.json``.
    """

    def __init__(
        self,
        output_dir: str,
        num_shards: int,
        class_names: Sequence[str],
        image_size: tuple[int, int] | None = None,
        alignment: str = "none",
        prefix: str = "data",
        extra_info: dict | None = None,
    ):
        if num_shards < 1:
            raise ValueError(f"num_shards: expected >= 1, got {num_shards}")
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.info = {
            "schema_version": SCHEMA_VERSION,
            "num_classes": len(self.class_names),
            "class_names": self.class_names,
            "image_size": list(image_size) if image_size else None,
            "alignment": alignment,
            **(extra_info or {}),
        }
        os.makedirs(output_dir, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        self._final = [
            os.path.join(output_dir, SHARD_PATTERN.format(prefix=prefix, index=i, count=num_shards))
            for i in range(num_shards)
        ]
        self._tmp = [f"{path}.tmp-{token}" for path in self._final]
        self._writers = [tf.io.TFRecordWriter(path) for path in self._tmp]
        self._counts = [0] * num_shards
        self._class_counts = [0] * len(self.class_names)
        self._next = 0

    def write(self, example: tf.train.Example) -> None:
        """Appends one example to the next shard."""
        label = example.features.feature["image/class/label"].int64_list.value[0]
        if not 0 <= label < len(self.class_names):
            raise ValueError(f"label {label} outside 0..{len(self.class_names) - 1}")
        self._writers[self._next].write(example.SerializeToString())
        self._counts[self._next] += 1
        self._class_counts[label] += 1
        self._next = (self._next + 1) % len(self._writers)

    @property
    def num_examples(self) -> int:
        return sum(self._counts)

    def close(self) -> dict:
        """Renames the shards into place, writes ``dataset_info.json`` and returns it."""
        for writer in self._writers:
            writer.close()
        for tmp, final in zip(self._tmp, self._final):
            os.replace(tmp, final)
        info = {
            **self.info,
            "num_examples": self.num_examples,
            "examples_per_class": self._class_counts,
            "shards": {os.path.basename(p): n for p, n in zip(self._final, self._counts)},
        }
        write_json_atomic(os.path.join(self.output_dir, INFO_FILE), info)
        return info

    def abort(self) -> None:
        """Closes and deletes the temporary shards; nothing is left behind."""
        for writer, tmp in zip(self._writers, self._tmp):
            writer.close()
            if os.path.exists(tmp):
                os.remove(tmp)

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def list_shards(data_dir: str) -> list[str]:
    """Sorted TFRecord shard paths in ``data_dir``; a clear error when there are none."""
    shards = sorted(glob.glob(os.path.join(data_dir, "*.tfrecord")))
    if not shards:
        raise UserError(f"data_dir: no *.tfrecord shards in '{data_dir}'")
    return shards


def read_dataset_info(data_dir: str) -> dict:
    """Reads ``dataset_info.json`` of a TFRecord dataset directory."""
    path = os.path.join(data_dir, INFO_FILE)
    if not os.path.isfile(path):
        raise UserError(f"data_dir: '{data_dir}' has no {INFO_FILE} (not a tfface TFRecord dataset)")
    with open(path) as f:
        return json.load(f)


def alignment_settings(info: dict) -> dict | None:
    """How a dataset's faces were aligned, as exported models record it: ``{"align": kind,
    "image_size": [h, w], "margin": m}`` (``dataset_info.json``'s ``alignment``, ``image_size``
    and ``margin``, as the aligners write them), or None when the faces were not aligned by ``tfface_align`` or the
    record is incomplete (a facenet crop without its margin)."""
    kind, size, margin = info.get("alignment"), info.get("image_size"), info.get("margin")
    if not isinstance(kind, str) or kind == "none" or not size or (kind == "facenet_crop" and margin is None):
        return None
    return {"align": kind, "image_size": [int(v) for v in size], "margin": float(margin or 0)}
