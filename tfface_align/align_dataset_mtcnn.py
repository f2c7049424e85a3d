"""Detect and align every face of a photo folder tree: aligned folders and/or TFRecord shards.

    python -m tfface_align.align_dataset_mtcnn INPUT_DIR OUTPUT_DIR [--align arcface] \\
        [--output_format both] [--image_size 182] [--margin 44] ...

INPUT_DIR holds one sub-folder per identity (facenet's layout). Outputs:

* ``folders``: ``OUTPUT_DIR/<identity>/<photo>.png`` (``<photo>_<i>.png`` with
  ``--detect_multiple_faces``), like facenet's ``align_dataset_mtcnn.py``;
* ``tfrecord``: shards + ``dataset_info.json`` in the tfface schema (``--tfrecord_dir``, default
  OUTPUT_DIR), with the landmarks (in aligned-image pixels) and the detection box;
* ``bounding_boxes_NNNNN.txt`` (facenet's format: ``path x1 y1 x2 y2``, or ``path`` alone when no
  face was aligned) and ``align_report.json`` (counts and the list of skipped files).

Resumable: what a run has finished is recorded in ``OUTPUT_DIR/.tfface_align/``; a rerun skips
it (delete that folder to start over). Broken inputs (empty, corrupt, not an image, unreadable,
too big) are skipped and reported, never fatal; CMYK, 16-bit, grey and alpha photos are converted
and huge ones (>= 40 MP) decoded at reduced resolution.
"""
from __future__ import annotations

import concurrent.futures
import glob
import json
import os
import random
import sys
import time
import uuid
from typing import Sequence

from absl import flags

from tfface.tools.cli import run_main
from tfface.core.errors import UserError, check_choice, check_dir, check_positive
from tfface_align.aligner import ALIGNMENTS, align_photos, face_example, output_size

FORMATS = ("folders", "tfrecord", "both")
STATE_DIR = ".tfface_align"

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", None, "Side of the aligned images in pixels (height for sphereface, whose "
                     "width is 96/112 of it). Default: 182 for facenet_crop, 112 for arcface and sphereface.")
flags.DEFINE_integer("margin", 44, "facenet_crop: margin around the detected box, in pixels of the original "
                     "photo (half on each side).")
flags.DEFINE_boolean("random_order", False, "Process the photos in random order (lets several processes "
                     "share one dataset).")
flags.DEFINE_float("gpu_memory_fraction", 1.0, "Share of GPU memory to use; below 1 TensorFlow allocates GPU "
                   "memory on demand (memory growth) instead of reserving it all.")
flags.DEFINE_boolean("detect_multiple_faces", False, "Align every face found, not only the main one (the "
                     "largest box, penalised by its distance from the photo centre).")
flags.DEFINE_enum("align", "facenet_crop", ALIGNMENTS, "facenet_crop: box + margin, resized (facenet); "
                  "arcface: 5-point similarity transform to 112x112; sphereface: to 112x96.")
flags.DEFINE_enum("output_format", "folders", FORMATS, "Write aligned image folders, TFRecord shards, or both.")
flags.DEFINE_string("tfrecord_dir", None, "Where to write the TFRecord shards; default OUTPUT_DIR.")
flags.DEFINE_integer("num_shards", 1, "Number of TFRecord shards.")
flags.DEFINE_integer("batch_size", 16, "Photos detected per batch (sizes may differ; the detector pads them).")
flags.DEFINE_integer("min_face_size", 20, "MTCNN: smallest face to find, in pixels.")


def list_dataset(input_dir: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted identity folders and (relative photo path, label) pairs; hidden files ignored."""
    classes = sorted(d for d in os.listdir(input_dir)
                     if not d.startswith(".") and os.path.isdir(os.path.join(input_dir, d)))
    if not classes:
        raise UserError(f"input_dir: '{input_dir}' has no identity sub-folders (expected INPUT_DIR/<name>/<photos>)")
    items = []
    for label, name in enumerate(classes):
        for fname in sorted(os.listdir(os.path.join(input_dir, name))):
            if not fname.startswith(".") and os.path.isfile(os.path.join(input_dir, name, fname)):
                items.append((f"{name}/{fname}", label))
    return classes, items


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done, self.start, self.last = total, enabled, 0, time.time(), 0.0

    def update(self, count: int, faces: int, skipped: int) -> None:
        self.done += count
        now = time.time()
        if self.enabled and (now - self.last > 0.5 or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-6)
            width = 30
            fill = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} photos "
                             f"{rate:.1f} images/s, {faces} faces, {skipped} skipped ")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _read_state(state_dir: str) -> dict[str, tuple[str, int]]:
    done = {}
    for path in sorted(glob.glob(os.path.join(state_dir, "processed-*.tsv"))):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3 and parts[2].isdigit():
                    done[parts[0]] = (parts[1], int(parts[2]))
    return done


def _read_journal(paths: Sequence[str]) -> list[bytes]:
    """Serialized examples of all journals, stopping quietly at a truncated tail."""
    import tensorflow as tf

    records = []
    for path in paths:
        try:
            for record in tf.data.TFRecordDataset(path):
                records.append(record.numpy())
        except tf.errors.DataLossError:
            pass  # the last record of an interrupted run
    return records


def align_dataset(
    input_dir: str,
    output_dir: str,
    alignment: str = "facenet_crop",
    image_size: int | None = None,
    margin: float = 44,
    output_format: str = "folders",
    num_shards: int = 1,
    batch_size: int = 16,
    random_order: bool = False,
    detect_multiple_faces: bool = False,
    tfrecord_dir: str | None = None,
    min_face_size: float = 20,
    detector=None,
    progress: bool = True,
    max_pixels: int | None = None,
) -> dict:
    """Aligns ``input_dir`` into ``output_dir`` (see the module docstring); returns the report."""
    from tfface.data.tfrecord import ShardedWriter
    from tfface_align.image_io import HUGE_PIXELS, load_photo
    from tfface_align.mtcnn import MTCNN

    check_dir(input_dir, "input_dir")
    check_choice(alignment, ALIGNMENTS, "align")
    check_choice(output_format, FORMATS, "output_format")
    check_positive(num_shards, "num_shards")
    check_positive(batch_size, "batch_size")
    check_positive(margin, "margin", allow_zero=True)
    if image_size is not None:
        check_positive(image_size, "image_size")
    if os.path.abspath(output_dir) == os.path.abspath(input_dir):
        raise UserError("output_dir: must differ from input_dir")
    size = output_size(alignment, image_size)
    classes, items = list_dataset(input_dir)
    want_folders = output_format in ("folders", "both")
    want_records = output_format in ("tfrecord", "both")
    tfrecord_dir = tfrecord_dir or output_dir
    state_dir = os.path.join(output_dir, STATE_DIR)
    os.makedirs(state_dir, exist_ok=True)
    settings = {"align": alignment, "image_size": list(size), "margin": margin,
                "detect_multiple_faces": detect_multiple_faces, "min_face_size": min_face_size}
    settings_path = os.path.join(state_dir, "settings.json")
    if os.path.isfile(settings_path):
        with open(settings_path) as f:
            previous = json.load(f)
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise UserError(f"output_dir: '{output_dir}' was aligned with other settings ({', '.join(changed)}: "
                            f"{ {k: previous.get(k) for k in changed} }); use another output_dir or delete "
                            f"'{state_dir}' to start over")
    else:
        from tfface.data.tfrecord import write_json_atomic

        write_json_atomic(settings_path, settings)

    def outputs_exist(rel: str, faces: int) -> bool:
        stem = os.path.join(output_dir, os.path.splitext(rel)[0])
        if faces == 0 or not want_folders:
            return True
        names = [f"{stem}.png"] if faces == 1 and not detect_multiple_faces else [f"{stem}_{i}.png" for i in range(faces)]
        return all(os.path.exists(n) for n in names)

    done = _read_state(state_dir)
    in_journal: set[str] = set()
    if want_records:  # aligned photos whose examples were lost (no journal, torn record) are redone
        import tensorflow as tf

        for raw in _read_journal(sorted(glob.glob(os.path.join(state_dir, "journal-*.tfrecord")))):
            source = tf.train.Example.FromString(raw).features.feature["image/source_id"].bytes_list.value[0]
            in_journal.add(source.decode())
    todo = [(rel, label) for rel, label in items
            if rel not in done or not outputs_exist(rel, done[rel][1])
            or (want_records and done[rel][0] == "ok" and os.path.join(input_dir, rel) not in in_journal)]
    if random_order:
        random.shuffle(todo)

    run_id = uuid.uuid4().hex[:8]
    report = {"photos": len(items), "already_done": len(items) - len(todo), "aligned_photos": 0,
              "faces_written": 0, "no_face": 0, "skipped": {}, "converted": {}}
    skipped_now = 0
    bbox_path = os.path.join(output_dir, "bounding_boxes_%05d.txt" % random.randint(0, 99999))
    detector = detector or MTCNN(min_face_size=min_face_size, batch_size=batch_size)
    bar = _Progress(len(todo), progress)
    journal = None
    if want_records and todo:
        import tensorflow as tf

        journal = tf.io.TFRecordWriter(os.path.join(state_dir, f"journal-{run_id}.tfrecord"))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    limit = max_pixels or HUGE_PIXELS
    try:
        with open(bbox_path if todo else os.devnull, "w") as bbox_file, \
                open(os.path.join(state_dir, f"processed-{run_id}.tsv") if todo else os.devnull, "w") as state:
            batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
            pending = pool.map(lambda rel: load_photo(os.path.join(input_dir, rel), limit),
                               [rel for rel, _ in batches[0]]) if batches else None
            for number, batch in enumerate(batches):
                photos = list(pending)
                if number + 1 < len(batches):  # decode the next batch while detecting this one
                    pending = pool.map(lambda rel: load_photo(os.path.join(input_dir, rel), limit),
                                       [rel for rel, _ in batches[number + 1]])
                results = align_photos(photos, detector, alignment, image_size, margin, detect_multiple_faces)
                for (rel, label), photo, result in zip(batch, photos, results):
                    stem = os.path.splitext(rel)[0]
                    for note in result.notes:
                        report["converted"][note.split("_")[0]] = report["converted"].get(note.split("_")[0], 0) + 1
                    if photo.image is None:
                        skipped_now += 1
                        bbox_file.write(f"{os.path.join(output_dir, stem)}.png\n")
                        state.write(f"{rel}\t{result.status}\t0\n")
                        continue
                    if want_folders and not want_records and os.path.exists(f"{os.path.join(output_dir, stem)}.png"):
                        report["already_done"] += 1  # aligned meanwhile by another process (facenet's check)
                        continue
                    for face in result.faces:
                        name = f"{stem}_{face.index}.png" if detect_multiple_faces else f"{stem}.png"
                        path = os.path.join(output_dir, name)
                        if want_folders:
                            os.makedirs(os.path.dirname(path), exist_ok=True)
                            with open(path + ".tmp", "wb") as f:
                                f.write(face.png())
                            os.replace(path + ".tmp", path)
                        if journal is not None:
                            journal.write(face_example(face, label, classes[label],
                                                       os.path.join(input_dir, rel)).SerializeToString())
                        x1, y1, x2, y2 = face.rect
                        bbox_file.write(f"{path} {x1} {y1} {x2} {y2}\n")
                    written = len(result.faces)
                    report["faces_written"] += written
                    if not written:
                        skipped_now += 1
                        bbox_file.write(f"{os.path.join(output_dir, stem)}.png\n")
                    if journal is not None:
                        journal.flush()
                    state.write(f"{rel}\t{result.status}\t{written}\n")
                    state.flush()
                bar.update(len(batch), report["faces_written"], skipped_now)
    finally:
        pool.shutdown()
        if journal is not None:
            journal.close()

    # Counts over every run, so a resumed run still reports the files skipped earlier.
    state = _read_state(state_dir)
    report["skipped_files"] = []
    for rel, _ in items:
        status, faces = state.get(rel, ("missing", 0))
        if status == "ok":
            report["aligned_photos"] += 1
        elif status == "no_face":
            report["no_face"] += 1
        else:
            report["skipped"][status] = report["skipped"].get(status, 0) + 1
        if status != "ok":
            report["skipped_files"].append({"path": rel, "reason": status})
    if want_records:
        report["tfrecord"] = _write_shards(state_dir, tfrecord_dir, num_shards, classes, size, alignment,
                                           rebuild=bool(todo), writer=ShardedWriter, margin=margin)
    from tfface.data.tfrecord import write_json_atomic

    write_json_atomic(os.path.join(output_dir, "align_report.json"), report)
    return report


def _write_shards(state_dir, tfrecord_dir, num_shards, classes, size, alignment, rebuild, writer, margin) -> dict:
    """(Re)builds the shards from every run's journal, without duplicates."""
    import tensorflow as tf

    info_path = os.path.join(tfrecord_dir, "dataset_info.json")
    if not rebuild and os.path.isfile(info_path):
        with open(info_path) as f:
            info = json.load(f)
        if info.get("num_shards_requested") == num_shards:
            return {"dir": tfrecord_dir, "examples": info.get("num_examples", 0), "rebuilt": False}
    from tfface.data.tfrecord import SHARD_PATTERN

    seen, count = set(), 0
    records = _read_journal(sorted(glob.glob(os.path.join(state_dir, "journal-*.tfrecord"))))
    old = set(glob.glob(os.path.join(tfrecord_dir, "data-*-of-*.tfrecord")))
    with writer(tfrecord_dir, num_shards, classes, size, alignment,
                extra_info={"num_shards_requested": num_shards, "producer": "tfface_align.align_dataset_mtcnn",
                            "margin": margin}) as out:
        for raw in records:
            example = tf.train.Example.FromString(raw)
            feature = example.features.feature
            key = (feature["image/source_id"].bytes_list.value[0], tuple(feature["image/bbox"].float_list.value))
            if key in seen:
                continue
            seen.add(key)
            out.write(example)
            count += 1
    new = {os.path.join(tfrecord_dir, SHARD_PATTERN.format(prefix="data", index=i, count=num_shards))
           for i in range(num_shards)}
    for path in old - new:  # shards of an earlier run with another --num_shards
        os.remove(path)
    return {"dir": tfrecord_dir, "examples": count, "rebuilt": True}


def configure_gpu_memory(fraction: float) -> None:
    """Maps facenet's ``gpu_memory_fraction`` to TF2: below 1, GPU memory grows on demand."""
    if not 0 < fraction <= 1:
        raise UserError(f"gpu_memory_fraction: expected a number in (0, 1], got {fraction}")
    if fraction < 1:
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)


def print_report(report: dict) -> None:
    print(f"Total number of images: {report['photos']}")
    print(f"Number of successfully aligned images: {report['aligned_photos']} "
          f"({report['faces_written']} faces written now, {report['already_done']} photos done earlier)")
    print(f"No face found: {report['no_face']}")
    for reason, count in sorted(report["skipped"].items()):
        print(f"Skipped ({reason}): {count}")
    for note, count in sorted(report["converted"].items()):
        print(f"Converted ({note}): {count}")
    for entry in report["skipped_files"][:50]:
        print(f"  {entry['reason']}: {entry['path']}")
    if len(report["skipped_files"]) > 50:
        print(f"  ... and {len(report['skipped_files']) - 50} more (see align_report.json)")
    if "tfrecord" in report:
        print(f"TFRecord: {report['tfrecord']['examples']} examples in {report['tfrecord']['dir']}")


def main(argv: Sequence[str]) -> None:
    if len(argv) != 3:
        raise UserError(f"expected 2 arguments INPUT_DIR OUTPUT_DIR, got {len(argv) - 1}: {list(argv[1:])}")
    configure_gpu_memory(FLAGS.gpu_memory_fraction)
    report = align_dataset(
        argv[1], argv[2], alignment=FLAGS.align, image_size=FLAGS.image_size, margin=FLAGS.margin,
        output_format=FLAGS.output_format, num_shards=FLAGS.num_shards, batch_size=FLAGS.batch_size,
        random_order=FLAGS.random_order, detect_multiple_faces=FLAGS.detect_multiple_faces,
        tfrecord_dir=FLAGS.tfrecord_dir, min_face_size=FLAGS.min_face_size, progress=True)
    print_report(report)


if __name__ == "__main__":
    run_main(main)
