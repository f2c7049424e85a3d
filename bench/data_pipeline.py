"""Input-pipeline throughput: tfface's tf.data (TFRecords and InsightFace .rec) vs PyTorch's DataLoader.

All three read the same JPEGs (128x128, cut from the real photos of ../shared/testdata/faces)
and produce the same thing: float32 (112, 112, 3) pixels, randomly cropped and flipped, shuffled,
in batches. Measured in the same run, in alternating rounds (the median of each is reported):

* ``tfface TFRecord``: :func:`tfface.data.pipeline.make_dataset` over 8 TFRecord shards;
* ``tfface .rec``: the same function reading the InsightFace ``.rec`` directly;
* ``PyTorch DataLoader``: an ImageFolder-style ``Dataset`` (file list + labels, PIL decode, NumPy
  crop/flip; torchvision's own ``ImageFolder`` does not import beside torch 2.13 here) in a
  ``DataLoader`` with 2 worker processes;

and, for scale, the training step it feeds: MobileFaceNet + a 1000-class softmax, forward +
backward + SGD, in one tf.function. Prints a markdown table with the ratios, writes
``bench/results/data_pipeline_<UTC time>.json``.

    python bench/data_pipeline.py                 # ~2 min on 2 cores
    python bench/data_pipeline.py --images 4000 --rounds 5
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfface.data import pipeline  # noqa: E402
from tfface.data.recordio import write_insightface  # noqa: E402
from tfface.data.tfrecord import ShardedWriter, list_shards, make_example  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")
FACES = os.path.join(os.path.dirname(ROOT), "shared", "testdata", "faces")
STORED, CROP, CLASSES = 128, 112, 50
TRAIN_BATCH = 64
TRAIN = f"MobileFaceNet training step (batch {TRAIN_BATCH}, forward+backward+SGD)"


def make_jpegs(count: int, seed: int = 0) -> list[tuple[int, bytes]]:
    """(class, 128x128 JPEG) pairs cut at random places and scales from the real test photos."""
    rng = np.random.default_rng(seed)
    photos = [cv2.imread(os.path.join(FACES, n)) for n in sorted(os.listdir(FACES)) if n.endswith(".jpg")]
    if not photos:
        sys.exit(f"no photos in {FACES}")
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2]) + 1))
        y, x = (int(rng.integers(0, d - side + 1)) for d in photo.shape[:2])
        chip = cv2.resize(photo[y:y + side, x:x + side], (STORED, STORED), interpolation=cv2.INTER_AREA)
        out.append((i * CLASSES // count, cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()))
    return out


def write_datasets(images: list[tuple[int, bytes]], root: str) -> dict:
    """The same JPEGs as identity folders, TFRecord shards and an InsightFace .rec."""
    folders = os.path.join(root, "folders")
    for i, (label, jpeg) in enumerate(images):
        os.makedirs(os.path.join(folders, f"id{label:03d}"), exist_ok=True)
        with open(os.path.join(folders, f"id{label:03d}", f"{i:06d}.jpg"), "wb") as f:
            f.write(jpeg)
    with ShardedWriter(os.path.join(root, "tfrecord"), 8, [f"id{c:03d}" for c in range(CLASSES)],
                       (STORED, STORED)) as out:
        for label, jpeg in images:
            out.write(make_example(jpeg, label, STORED, STORED))
    write_insightface(os.path.join(root, "rec"), images, (STORED, STORED))
    return {"folders": folders, "shards": list_shards(os.path.join(root, "tfrecord")), "rec": os.path.join(root, "rec")}


def tf_batches(source, batch_size: int):
    dataset = pipeline.make_dataset(source, batch_size, (CROP, CROP), training=True, seed=0,
                                    augment=pipeline.Augment(random_crop=True, random_flip=True))
    return iter(dataset)


class FolderDataset:
    """ImageFolder's behaviour without torchvision: (path, class) list, PIL decode to RGB, random
    112x112 crop and horizontal flip with NumPy, float32 HWC (like the tf.data output)."""

    def __init__(self, root: str):
        self.items = [(os.path.join(root, name, f), label)
                      for label, name in enumerate(sorted(os.listdir(root)))
                      for f in sorted(os.listdir(os.path.join(root, name)))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        path, label = self.items[index]
        with open(path, "rb") as f:
            image = np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB"))
        y, x = np.random.randint(0, image.shape[0] - CROP + 1), np.random.randint(0, image.shape[1] - CROP + 1)
        image = image[y:y + CROP, x:x + CROP]
        if np.random.rand() < 0.5:
            image = image[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), label


def torch_batches(root: str, batch_size: int, workers: int):
    import torch

    loader = torch.utils.data.DataLoader(FolderDataset(root), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=True)

    def forever():
        while True:
            yield from loader

    return forever()


def images_per_second(batches, batch_size: int, count: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * batch_size / (time.perf_counter() - start)


def training_steps(batch_size: int):
    """A function timing ``n`` MobileFaceNet + softmax training steps (forward, backward, SGD)
    on CPU, returning images/s; traced once here."""
    import keras

    from tfface.models import get_backbone

    model = get_backbone("mobilefacenet", input_shape=(CROP, CROP, 3), embedding_size=128)
    head = keras.layers.Dense(1000)
    optimizer = keras.optimizers.SGD(0.01)
    images = tf.random.uniform([batch_size, CROP, CROP, 3], 0, 255)
    labels = tf.random.uniform([batch_size], 0, 1000, tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = head(model(images / 127.5 - 1.0, training=True))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        variables = model.trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    step().numpy()

    def rate(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        loss.numpy()
        return steps * batch_size / (time.perf_counter() - start)

    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="PyTorch DataLoader worker processes")
    parser.add_argument("--train_steps", type=int, default=2, help="timed training steps per round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_datasets(make_jpegs(args.images), tmp)
        readers = {
            "tfface TFRecord (tf.data)": tf_batches(paths["shards"], args.batch_size),
            "tfface .rec (tf.data)": tf_batches(paths["rec"], args.batch_size),
            f"PyTorch DataLoader ({args.workers} workers, PIL)": torch_batches(paths["folders"], args.batch_size,
                                                                              args.workers),
        }
        train_rate = training_steps(TRAIN_BATCH)
        rates: dict[str, list[float]] = {name: [] for name in [*readers, TRAIN]}
        for _ in range(args.rounds):  # alternate, so load from other processes hits all alike
            for name, batches in readers.items():
                rates[name].append(images_per_second(batches, args.batch_size, args.batches))
                print(f"  {name}: {rates[name][-1]:.0f} images/s", file=sys.stderr)
            rates[TRAIN].append(train_rate(args.train_steps))
            print(f"  {TRAIN}: {rates[TRAIN][-1]:.1f} images/s", file=sys.stderr)
        del readers
    median = {name: float(np.median(r)) for name, r in rates.items()}
    train = median.pop(TRAIN)
    torch_name = next(n for n in median if n.startswith("PyTorch"))
    print(f"\nInput pipeline, {args.images} JPEGs {STORED}x{STORED} -> random {CROP}x{CROP} crop + flip, "
          f"batch {args.batch_size}, {os.cpu_count()} CPU cores, median of {args.rounds} rounds\n")
    print("| pipeline | images/s | vs PyTorch | vs MobileFaceNet training step |")
    print("|---|---:|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.0f} | {value / median[torch_name]:.2f}x | {value / train:.1f}x |")
    print(f"| {TRAIN} | {train:.1f} | | 1.0x |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(RESULTS_DIR, f"data_pipeline_{stamp}.json"), "w") as f:
        json.dump({"args": vars(args), "rounds": rates, "median_images_per_second": median,
                   "training_step_images_per_second": train, "cpu_count": os.cpu_count(),
                   "platform": platform.platform(), "tensorflow": tf.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
