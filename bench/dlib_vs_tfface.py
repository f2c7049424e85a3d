"""dlib's face recognition ResNet run by dlib against the same network exported by tfface, same run.

1. Chips: the same 150 px chips (cut by dlib from ``../shared/testdata/faces``, repeated to
   ``--batch_size``) through dlib's batched ``compute_face_descriptor`` and through tfface's
   exported SavedModel (``serving_default``, uint8 chips): faces/s and the ratio.
2. Photos -> descriptors: face_recognition's pipeline written with dlib directly (HOG detector
   with one upsampling, the 5-point predictor of ``face_recognition_models``, the descriptor),
   against tfface's end-to-end export (``--with_alignment``: decode, MTCNN, dlib chip, network in
   one graph), on the same JPEG bytes (photos downsized to ``--max_side``): photos/s and the ratio.

Prints a markdown table, writes ``bench/results/dlib_vs_tfface_<UTC>.json``.

    python bench/dlib_vs_tfface.py
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import dlib  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.export import end_to_end, saved_model  # noqa: E402
from tfface.importers import load_pretrained  # noqa: E402
from tfface.importers.dlib_resnet import default_path  # noqa: E402
from tfface_align import MTCNN  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FACES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "testdata", "faces")


def timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces_dir", default=FACES)
    parser.add_argument("--photos", type=int, default=12, help="photos of faces_dir used")
    parser.add_argument("--max_side", type=int, default=640, help="photos are downsized to this longest side")
    parser.add_argument("--batch_size", type=int, default=64, help="chips per batched call")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model_file = default_path()
    models = os.path.dirname(model_file)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat"))
    recognizer = dlib.face_recognition_model_v1(model_file)

    encoded, chips = [], []
    for path in sorted(glob.glob(os.path.join(args.faces_dir, "img*.jpg")))[:args.photos]:
        image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        scale = args.max_side / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        encoded.append(cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes())
        found = detector(image, 1)
        if found:
            chips.append(dlib.get_face_chip(image, predictor(image, found[0]), size=150, padding=0.25))
    batch = np.stack([chips[i % len(chips)] for i in range(args.batch_size)])

    imported = load_pretrained("dlib_resnet_v1")
    with tempfile.TemporaryDirectory() as tmp:
        chip_model = tf.saved_model.load(saved_model.export_saved_model(
            imported.embedder, tmp, "dlib", 1, imported.alignment, warmup_batch_sizes=(1,), source=imported.source))
        photo_model = tf.saved_model.load(end_to_end.export_end_to_end(
            imported.embedder, tmp, "dlib_photos", imported.alignment, 1, 10, MTCNN(), source=imported.source))
    serve_chips = chip_model.signatures["serving_default"]
    serve_photos = photo_model.signatures["serving_default"]

    chip_list = list(batch)
    dlib_chip_s = timed(lambda: recognizer.compute_face_descriptor(chip_list), args.repeats)
    chips_tensor = tf.constant(batch)
    tfface_chip_s = timed(lambda: serve_chips(images=chips_tensor)["embeddings"].numpy(), args.repeats)

    def dlib_photos():
        for data in encoded:
            image = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for box in detector(image, 1):
                recognizer.compute_face_descriptor(image, predictor(image, box))

    photos_tensor = tf.constant(encoded)
    dlib_photo_s = timed(dlib_photos, args.repeats)
    tfface_photo_s = timed(lambda: serve_photos(image_bytes=photos_tensor)["embeddings"].numpy(), args.repeats)

    rows = [
        ("150 px chips, batched (faces/s)", len(batch) / dlib_chip_s, len(batch) / tfface_chip_s),
        (f"photos -> descriptors ({len(encoded)} photos, <= {args.max_side} px; photos/s)",
         len(encoded) / dlib_photo_s, len(encoded) / tfface_photo_s),
    ]
    print(f"dlib {dlib.__version__} vs tfface export, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print("| task | dlib | tfface | ratio |\n|---|---:|---:|---:|")
    for task, theirs, ours in rows:
        print(f"| {task} | {theirs:.1f} | {ours:.1f} | {ours / theirs:.2f}x |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(RESULTS_DIR, f"dlib_vs_tfface_{stamp}.json"), "w") as f:
        json.dump({"args": vars(args), "cpus": os.cpu_count(), "dlib": dlib.__version__, "chips": len(chips),
                   "rows": [{"task": t, "dlib_per_s": a, "tfface_per_s": b, "ratio": b / a} for t, a, b in rows]},
                  f, indent=1)


if __name__ == "__main__":
    main()
