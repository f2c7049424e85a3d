"""InsightFace ``.rec`` datasets → tfface TFRecord shards (the one schema), without MXNet.

Parallel over shards (one process per shard at a time), resumable per shard: a finished shard is
renamed into place and its statistics written to ``OUTPUT_DIR/.prepare/``; a rerun converts only
the shards missing there. Image ``i`` of the ``.rec`` (in key order) goes to shard
``i % num_shards``, so every shard holds every identity. The ``.bin`` verification sets found
beside ``train.rec`` are checked (pickled (images, issame) without running any pickled code)
and copied.
"""
from __future__ import annotations

import concurrent.futures
import glob
import json
import multiprocessing
import os
import pickle
import shutil
import sys
import time
import uuid

from tfface.data.recordio import InsightFaceRecord, RecordIOError
from tfface.core.errors import UserError, check_positive

STATE_DIR = ".prepare"
ALIGNMENT = "arcface"  # InsightFace's datasets are 5-point aligned to its 112x112 template


def _encoded_image(payload: bytes) -> tuple[bytes, str, int, int]:
    """(JPEG/PNG bytes, format, height, width) of a record's image, checked by decoding it as
    training will (:mod:`tfface.core.images`); ValueError when unreadable."""
    from tfface.core import images

    data = images.canonical_bytes(payload)  # other formats become PNG
    fmt = images.sniff(data)
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"{fmt} image (the TFRecord schema stores JPEG or PNG)")
    try:
        height, width = images.load(data).shape[:2]
    except UserError:
        raise ValueError(f"unreadable {fmt} image") from None
    return data, fmt, height, width


_counter = None


def _init_worker(counter) -> None:
    global _counter
    _counter = counter


def convert_shard(rec_dir: str, output_dir: str, shard: int, num_shards: int, skip_bad: bool,
                  name: str = "train") -> dict:
    """Writes shard ``shard`` (atomically) and returns its statistics (examples, per-class
    counts, bad records). Raises :class:`RecordIOError` on a bad record unless ``skip_bad``."""
    import tensorflow as tf

    from tfface.data.tfrecord import SHARD_PATTERN, make_example

    path = os.path.join(output_dir, SHARD_PATTERN.format(prefix="data", index=shard, count=num_shards))
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    counts: dict[int, int] = {}
    sizes: set[tuple[int, int]] = set()
    with InsightFaceRecord(rec_dir, name) as dataset:
        keys = dataset.image_keys[shard::num_shards]
        errors: list[RecordIOError] = []
        try:
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in dataset.images(keys, skip_bad, errors):
                    if _counter is not None:
                        with _counter.get_lock():
                            _counter.value += 1
                    try:
                        encoded, fmt, height, width = _encoded_image(record.encoded)
                        if dataset.num_classes and not 0 <= record.label < dataset.num_classes:
                            raise ValueError(f"label {record.label} outside 0..{dataset.num_classes - 1}")
                    except ValueError as err:
                        error = RecordIOError(dataset.rec_path, record.offset, f"image record {record.key}: {err}")
                        if not skip_bad:
                            raise error from None
                        errors.append(error)
                        continue
                    writer.write(make_example(encoded, record.label, height, width, image_format=fmt,
                                              text=str(record.label), source_id=f"{name}.rec#{record.key}")
                                 .SerializeToString())
                    counts[record.label] = counts.get(record.label, 0) + 1
                    sizes.add((height, width))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        bad = [str(e) for e in errors]
    return {"shard": os.path.basename(path), "examples": sum(counts.values()),
            "class_counts": {str(k): v for k, v in sorted(counts.items())}, "bad_records": bad,
            "image_sizes": sorted(sizes)}


def check_bin(path: str) -> int:
    """Number of pairs of an InsightFace ``.bin`` verification set, read without running pickled
    code (only plain containers, bytes and bools); a clear error when it is something else."""
    from tfface.core.images import sniff

    class _Plain(pickle.Unpickler):
        def find_class(self, module, name):
            raise UserError(f"{path}: refuses to load {module}.{name} (expected pickled (list of image bytes, "
                            f"list of bool))")

    try:
        with open(path, "rb") as f:
            content = _Plain(f, encoding="bytes").load()
        images, issame = content
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise UserError(f"{path}: not a (images, issame) pickle ({err})") from None
    if len(images) != 2 * len(issame):
        raise UserError(f"{path}: {len(images)} images for {len(issame)} pairs (expected twice as many)")
    for i, data in enumerate(images):
        if not isinstance(data, (bytes, bytearray)) or sniff(bytes(data)) is None:
            raise UserError(f"{path}: image {i} is not encoded image bytes")
    return len(issame)


def _progress(done: int, total: int, done_now: int, start: float) -> None:
    rate = done_now / max(time.time() - start, 1e-6)
    fill = int(30 * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * fill}{'.' * (30 - fill)}] {done}/{total} images {rate:.1f} images/s ")
    sys.stderr.flush()


def prepare_insightface(rec_dir: str, output_dir: str, num_shards: int = 16, workers: int | None = None,
                        skip_bad: bool = False, progress: bool = True, name: str = "train") -> dict:
    """Converts ``rec_dir`` (``train.rec``, ``train.idx``, ``property``, ``*.bin``) into TFRecord
    shards + ``dataset_info.json`` in ``output_dir``; returns the dataset info.

    Args:
        rec_dir: an InsightFace dataset directory.
        output_dir: where the shards, ``dataset_info.json`` and the copied ``.bin`` sets go.
        num_shards: number of TFRecord shards (a rerun must use the same number).
        workers: processes converting shards in parallel (default: CPU count; 1 = in this process).
        skip_bad: skip and count malformed records and unreadable images instead of stopping.
        progress: print a progress bar with images/s to stderr.
        name: base name of the ``.rec``/``.idx`` files.
    """
    check_positive(num_shards, "num_shards")
    workers = workers or os.cpu_count() or 1
    check_positive(workers, "workers")
    with InsightFaceRecord(rec_dir, name) as dataset:
        total, num_classes, image_size = len(dataset.image_keys), dataset.num_classes, dataset.image_size
    if not total:
        raise UserError(f"rec_dir: '{rec_dir}/{name}.rec' holds no image records")
    from tfface.data.tfrecord import INFO_FILE, SCHEMA_VERSION, write_json_atomic

    state_dir = os.path.join(output_dir, STATE_DIR)
    os.makedirs(state_dir, exist_ok=True)
    stats_path = os.path.join(state_dir, "shard-{:05d}-of-{:05d}.json")
    done = {}
    for shard in range(num_shards):
        if os.path.isfile(stats_path.format(shard, num_shards)):
            with open(stats_path.format(shard, num_shards)) as f:
                stats = json.load(f)
            if os.path.isfile(os.path.join(output_dir, stats["shard"])):
                done[shard] = stats
    todo = [s for s in range(num_shards) if s not in done]
    counter = multiprocessing.get_context("spawn").Value("q", 0)
    counter.value = sum(s["examples"] + len(s["bad_records"]) for s in done.values())
    start, initial = time.time(), counter.value

    def finished(shard: int, stats: dict) -> None:
        write_json_atomic(stats_path.format(shard, num_shards), stats)
        done[shard] = stats

    if workers == 1:
        _init_worker(counter)
        for shard in todo:
            finished(shard, convert_shard(rec_dir, output_dir, shard, num_shards, skip_bad, name))
            if progress:
                _progress(counter.value, total, counter.value - initial, start)
        _init_worker(None)
    elif todo:
        context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
        with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)), mp_context=context,
                                                    initializer=_init_worker, initargs=(counter,)) as pool:
            futures = {pool.submit(convert_shard, rec_dir, output_dir, s, num_shards, skip_bad, name): s
                       for s in todo}
            pending = set(futures)
            while pending:
                complete, pending = concurrent.futures.wait(pending, timeout=0.5)
                for future in complete:
                    finished(futures[future], future.result())
                if progress:
                    _progress(counter.value, total, counter.value - initial, start)
    if progress:
        sys.stderr.write("\n")

    current = {os.path.join(output_dir, stats["shard"]) for stats in done.values()}
    for path in set(glob.glob(os.path.join(output_dir, "data-*-of-*.tfrecord"))) - current:
        os.remove(path)  # shards of an earlier run with another --num_shards
    class_counts = [0] * (num_classes or 0)
    for stats in done.values():
        for label, count in stats["class_counts"].items():
            if int(label) >= len(class_counts):
                class_counts += [0] * (int(label) + 1 - len(class_counts))
            class_counts[int(label)] += count
    sizes = {tuple(size) for s in done.values() for size in s["image_sizes"]}
    if image_size is None and len(sizes) == 1:
        image_size = sizes.pop()
    bins = {}
    for path in sorted(glob.glob(os.path.join(rec_dir, "*.bin"))):
        bins[os.path.basename(path)] = check_bin(path)
        target = os.path.join(output_dir, os.path.basename(path))
        shutil.copyfile(path, target + ".tmp")
        os.replace(target + ".tmp", target)
    info = {
        "schema_version": SCHEMA_VERSION,
        "num_classes": len(class_counts),
        "class_names": [str(i) for i in range(len(class_counts))],
        "image_size": list(image_size) if image_size else None,
        "alignment": ALIGNMENT,
        "num_examples": sum(s["examples"] for s in done.values()),
        "examples_per_class": class_counts,
        "shards": {done[s]["shard"]: done[s]["examples"] for s in sorted(done)},
        "producer": "tfface.data.prepare_insightface",
        "source": os.path.abspath(os.path.join(rec_dir, f"{name}.rec")),
        "bad_records": [e for s in sorted(done) for e in done[s]["bad_records"]],
        "verification_sets": bins,
    }
    write_json_atomic(os.path.join(output_dir, INFO_FILE), info)
    return info
