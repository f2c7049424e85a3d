"""Frames/s of the whole video recognition pipeline against what a user glues together today.

A 640x480 video is assembled from the real photos of ``../shared/testdata/faces`` (each photo
letterboxed, held for ``--frames_per_photo`` frames while it drifts a few pixels). Both pipelines
read it with OpenCV, find every face, align it (arcface, 112x112), embed it with the same
MobileFaceNet (512-d; random weights, which do not change the cost), name it against a facebank of
three people, draw boxes and labels, and write the annotated video:

* **tfface**: :func:`tfface.recognition.video.process_video` (batched TF MTCNN over ``--batch_size`` frames,
  one embedding call per batch, the exported SavedModel), with every frame recognised
  (``every_n_frames=1``), and with ``--every_n_frames`` k (boxes tracked in between) as a second row;
* **peer**: the ``mtcnn`` PyPI package's ``detect_faces`` per frame + one Keras call per face.

Same detector parameters (min face 20, thresholds 0.6/0.7/0.7, factor 0.709). Each pipeline runs
``--repeats`` times over the video, alternating, and its fastest run counts (slower runs measure
the rest of the machine). Prints a markdown table with the ratio; writes
``bench/results/video_throughput_<UTC time>.json``.

    python bench/video_throughput.py                    # ~3-5 min on 2 loaded cores
    python bench/video_throughput.py --frames_per_photo 1 --repeats 1
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
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfface  # noqa: E402
import tfface_align  # noqa: E402
from tfface.recognition.facebank import FaceBank  # noqa: E402
from tfface.recognition.inference import load_embedder  # noqa: E402
from tfface.recognition.annotate import draw_faces  # noqa: E402
from tfface.recognition.video import (Face, Recognizer, VideoOutput, open_capture, process_video,  # noqa: E402
                          read_frames, released)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FACES = os.path.join(HERE, "..", "..", "shared", "testdata", "faces")
RESULTS_DIR = os.path.join(HERE, "results")
HEIGHT, WIDTH = 480, 640
LANDMARK_KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
ALIGNMENT = {"align": "arcface", "image_size": [112, 112], "margin": 0}


def make_video(paths: list[str], path: str, frames_per_photo: int) -> int:
    """Writes the 640x480 test video; returns its frame count."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (WIDTH, HEIGHT))
    count = 0
    for photo in paths:
        image = cv2.imread(photo)
        scale = min((WIDTH - 40) / image.shape[1], (HEIGHT - 40) / image.shape[0])
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for k in range(frames_per_photo):
            canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            y, x = (HEIGHT - image.shape[0]) // 2 + k % 5 - 2, (WIDTH - image.shape[1]) // 2 + 2 * (k % 5) - 4
            canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
            writer.write(canvas)
            count += 1
    writer.release()
    return count


def export_model(base: str) -> tuple[keras.Model, str]:
    model = tfface.models.build_embedder("mobilefacenet", (112, 112), 512, "minus_one_to_one")
    warm = np.random.default_rng(0).uniform(0, 255, (8, 112, 112, 3)).astype(np.float32)
    for _ in range(10):  # BatchNorm statistics, so embeddings are not ~0
        model(warm, training=True)
    return model, tfface.export_saved_model(model, base, "bench", alignment=ALIGNMENT)


def run_tfface(video: str, recognizer: Recognizer, out: str, every_n_frames: int, batch_size: int) -> tuple[float, int]:
    start = time.perf_counter()
    with released(open_capture(video)) as capture:
        summary = process_video(capture, recognizer, out, None, every_n_frames, batch_size, progress=False)
    return time.perf_counter() - start, summary["frames"]


def run_peer(video: str, detector, model: keras.Model, bank: FaceBank, threshold: float, out: str) -> tuple[float, int]:
    """The glue: mtcnn package per frame, one Keras call per face, NumPy nearest neighbour."""
    start = time.perf_counter()
    output, frames = None, 0
    with released(open_capture(video)) as capture:
        for image in read_frames(capture):
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            found = detector.detect_faces(rgb, threshold_onet=0.7, fit_to_image=False, box_format="xyxy")
            faces = []
            for face in found:
                marks = np.array([face["keypoints"][k] for k in LANDMARK_KEYS])
                chip = tfface_align.align(rgb, marks, "arcface", (112, 112)).astype(np.float32)
                embedding = tf.math.l2_normalize(model(chip[None], training=False), 1).numpy()
                names, distances = bank.identify(embedding, threshold)
                faces.append(Face(tuple(face["box"]), face["confidence"], names[0], float(distances[0])))
            draw_faces(image, faces)
            if output is None:
                output = VideoOutput(out, 25.0, (WIDTH, HEIGHT))
            output.write(image)
            frames += 1
    output.close()
    return time.perf_counter() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces_dir", default=DEFAULT_FACES)
    parser.add_argument("--frames_per_photo", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--every_n_frames", type=int, default=3)
    args = parser.parse_args()

    paths = sorted(glob.glob(os.path.join(args.faces_dir, "*.jpg")))
    if not paths:
        raise SystemExit(f"no photos in {args.faces_dir}")
    from mtcnn import MTCNN as PackageMTCNN

    work = tempfile.mkdtemp(prefix="video-bench-")
    video = os.path.join(work, "faces.mp4")
    frame_count = make_video(paths, video, args.frames_per_photo)
    model, version = export_model(work)
    embedder = load_embedder(version)
    detector = tfface_align.MTCNN()
    bank = FaceBank.for_model(embedder)
    for name, photo in zip(("a", "b", "c"), paths[:3]):
        bank.add_person(name, [photo], embedder, detector)
    threshold = 1.0
    recognizer = Recognizer(embedder, bank, threshold, 0, detector)
    peer = PackageMTCNN()

    warm = os.path.join(work, "warm.mp4")
    make_video(paths[:2], warm, 2)
    runs = {"tfface": lambda v: run_tfface(v, recognizer, os.path.join(work, "ours.mp4"), 1, args.batch_size),
            f"tfface, every {args.every_n_frames} frames": lambda v: run_tfface(
                v, recognizer, os.path.join(work, "ours_k.mp4"), args.every_n_frames, args.batch_size),
            "mtcnn package + per-face Keras": lambda v: run_peer(v, peer, model, bank, threshold,
                                                                 os.path.join(work, "peer.mp4"))}
    for run in runs.values():
        run(warm)  # tracing and first-call costs
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds, frames = run(video)
            assert frames == frame_count, (name, frames, frame_count)
            best[name] = min(best[name], seconds)

    peer_name = "mtcnn package + per-face Keras"
    print(f"\n{frame_count} frames of {WIDTH}x{HEIGHT} from {len(paths)} photos, fastest of {args.repeats} runs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| pipeline | seconds | frames/s | speed-up vs peer |\n|---|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} | {frame_count / seconds:.2f} | {best[peer_name] / seconds:.2f}x |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(RESULTS_DIR, f"video_throughput_{stamp}.json")
    with open(path, "w") as f:
        json.dump({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
                               "load_average": os.getloadavg()},
                   "frames": frame_count, "size": [WIDTH, HEIGHT], "photos": len(paths), "repeats": args.repeats,
                   "batch_size": args.batch_size, "every_n_frames": args.every_n_frames, "seconds": best,
                   "frames_per_second": {k: frame_count / v for k, v in best.items()},
                   "speedup_vs_peer": {k: best[peer_name] / v for k, v in best.items()}}, f, indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
