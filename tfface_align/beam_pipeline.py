"""Detection + alignment of a photo collection as an Apache Beam pipeline (``pip install tfface[beam]``).

    paths ──MatchFiles──► batches ──AlignDoFn (one MTCNN per worker)──► tf.train.Examples
          ──WriteToTFRecord──► data-NNNNN-of-MMMMM.tfrecord + dataset_info.json
          failures (unreadable photo, no face, error) ──► failures.jsonl

Each photo is aligned by :func:`tfface_align.aligner.align_photos`, exactly as
``align_dataset_mtcnn`` does; a photo's identity is the name of its folder (facenet's layout), and
labels are the sorted identity names' ranks. A photo that makes a batch fail is retried alone and
reported, so no other photo is lost. Runs on any Beam runner (Direct, Dataflow, Flink, Spark);
paths and outputs may be on any filesystem Beam knows (local, ``gs://``, ...).
"""
from __future__ import annotations

import json
import os
import posixpath
import tempfile
import uuid
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import WriteToTFRecord
from apache_beam.transforms import combiners

from tfface.data.tfrecord import SCHEMA_VERSION
from tfface_align.aligner import align_photos, face_example, output_size

FAILURES = "failures"


def identity_of(path: str) -> str:
    """The identity of a photo: the name of the folder holding it."""
    return posixpath.basename(posixpath.dirname(path.replace(os.sep, "/")))


def _load(path: str, max_pixels: int | None):
    """A photo from any Beam filesystem (remote files are copied to a local temporary file)."""
    from tfface_align.image_io import HUGE_PIXELS, load_photo

    limit = max_pixels or HUGE_PIXELS
    if os.path.exists(path):
        return load_photo(path, limit)
    with tempfile.NamedTemporaryFile() as tmp:
        with FileSystems.open(path) as f:
            tmp.write(f.read())
        tmp.flush()
        return load_photo(tmp.name, limit)


class AlignDoFn(beam.DoFn):
    """Batch of photo paths → serialized examples (main output) and failure records (tagged
    ``failures``: JSON lines ``{"path", "reason"}``). The detector is built once per worker."""

    def __init__(self, alignment: str, image_size: int | None, margin: float, detect_multiple_faces: bool,
                 min_face_size: float, batch_size: int, max_pixels: int | None = None, detector=None):
        self.settings = dict(alignment=alignment, image_size=image_size, margin=margin,
                             detect_multiple_faces=detect_multiple_faces)
        self.min_face_size, self.batch_size, self.max_pixels = min_face_size, batch_size, max_pixels
        self.detector = detector

    def setup(self) -> None:
        if self.detector is None:
            from tfface_align.mtcnn import MTCNN

            self.detector = MTCNN(min_face_size=self.min_face_size, batch_size=self.batch_size)

    def _align(self, paths: Sequence[str]) -> list:
        """(path, PhotoResult or the exception) per photo; a failing batch is retried photo by photo."""
        try:
            photos = [_load(p, self.max_pixels) for p in paths]
            return list(zip(paths, align_photos(photos, self.detector, **self.settings)))
        except Exception as err:  # noqa: BLE001 - one bad photo must not lose the batch
            if len(paths) == 1:
                return [(paths[0], err)]
            return [item for path in paths for item in self._align([path])]

    def process(self, paths: Sequence[str], classes: Sequence[str]) -> Iterable:
        labels = {name: label for label, name in enumerate(classes)}
        for path, result in self._align(list(paths)):
            if isinstance(result, Exception):
                reason = f"error: {type(result).__name__}: {str(result).strip()[:300]}"
            elif not result.faces:
                reason = result.status
            else:
                name = identity_of(path)
                for face in result.faces:
                    yield face_example(face, labels[name], name, path).SerializeToString()
                continue
            yield beam.pvalue.TaggedOutput(FAILURES, json.dumps({"path": path, "reason": reason}))


def _label_of(serialized: bytes) -> int:
    import tensorflow as tf

    return tf.train.Example.FromString(serialized).features.feature["image/class/label"].int64_list.value[0]


def _reason(line: str) -> str:
    return json.loads(line)["reason"].split(":")[0]


def _write_info(_, output_dir: str, classes: list, counts: list, shards: list, failures: list,
                settings: dict) -> None:
    per_class = dict(counts)
    info = {
        "schema_version": SCHEMA_VERSION,
        "num_classes": len(classes),
        "class_names": list(classes),
        "image_size": list(output_size(settings["alignment"], settings["image_size"])),
        "alignment": settings["alignment"],
        "margin": settings["margin"],
        "num_examples": sum(per_class.values()),
        "examples_per_class": [per_class.get(i, 0) for i in range(len(classes))],
        "shards": sorted(posixpath.basename(s.replace(os.sep, "/")) for s in shards),
        "failures": dict(sorted(failures)),
        "producer": "tfface_align.beam_align",
    }
    final = FileSystems.join(output_dir, "dataset_info.json")
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(tmp) as f:
        f.write(json.dumps(info, indent=1).encode())
    FileSystems.rename([tmp], [final])


def build_pipeline(
    pipeline: beam.Pipeline,
    input_pattern: str,
    output_dir: str,
    alignment: str = "arcface",
    image_size: int | None = None,
    margin: float = 44,
    detect_multiple_faces: bool = False,
    min_face_size: float = 20,
    batch_size: int = 16,
    num_shards: int = 0,
    detector=None,
) -> None:
    """Adds the alignment steps to ``pipeline``: photos matching ``input_pattern`` →
    TFRecord shards (``num_shards`` 0 lets the runner choose), ``dataset_info.json`` and
    ``failures.jsonl`` in ``output_dir``. ``detector``: for tests; workers build their own."""
    output_size(alignment, image_size)  # validates alignment early
    settings = dict(alignment=alignment, image_size=image_size, margin=margin)
    paths = (pipeline
             | "Match" >> fileio.MatchFiles(input_pattern)
             | "Path" >> beam.Map(lambda meta: meta.path)
             | "NotHidden" >> beam.Filter(lambda p: not posixpath.basename(p.replace(os.sep, "/")).startswith(".")))
    classes = (paths
               | "Identity" >> beam.Map(identity_of)
               | "Distinct" >> beam.Distinct()
               | "Names" >> combiners.ToList()
               | "Sort" >> beam.Map(sorted))
    aligned = (paths
               | "Reshuffle" >> beam.Reshuffle()
               | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
               | "Align" >> beam.ParDo(AlignDoFn(alignment, image_size, margin, detect_multiple_faces,
                                                 min_face_size, batch_size, detector=detector),
                                       classes=beam.pvalue.AsSingleton(classes))
               .with_outputs(FAILURES, main="examples"))
    shards = aligned.examples | "Write" >> WriteToTFRecord(
        FileSystems.join(output_dir, "data"), file_name_suffix=".tfrecord", num_shards=num_shards,
        shard_name_template="-SSSSS-of-NNNNN")
    failures = aligned[FAILURES]
    failures | "Report" >> beam.io.WriteToText(FileSystems.join(output_dir, "failures"), file_name_suffix=".jsonl",
                                               shard_name_template="")
    counts = (aligned.examples
              | "Label" >> beam.Map(_label_of)
              | "PerClass" >> combiners.Count.PerElement()
              | "Counts" >> combiners.ToList())
    failure_counts = (failures
                      | "Reason" >> beam.Map(_reason)
                      | "PerReason" >> combiners.Count.PerElement()
                      | "Failures" >> combiners.ToList())
    (pipeline
     | "Once" >> beam.Create([None])
     | "Info" >> beam.Map(_write_info, output_dir, beam.pvalue.AsSingleton(classes), beam.pvalue.AsSingleton(counts),
                          beam.pvalue.AsList(shards), beam.pvalue.AsSingleton(failure_counts), settings))
