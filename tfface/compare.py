"""Compare faces in photos (facenet's ``compare.py``): distance matrix and same/different.

    python -m tfface.compare <model> img1.jpg img2.jpg [img3.jpg ...]

Each photo's most prominent face is detected by MTCNN and aligned the way the model's training
faces were (the alignment recorded in the export), then embedded. Prints the distance matrix and,
with the model's calibrated ``threshold.json`` (written by ``validate_on_lfw`` /
``validate_on_bins --save_threshold``), same/different for every pair. Photos without a face are
reported and left out. ``--noalign`` takes the files as already aligned faces. ``--annotate
sheet.jpg`` writes the photos side by side, each face boxed with its distance to the first photo.
"""
from __future__ import annotations

import os

from absl import flags

from tfface.tools import cli
from tfface.core.errors import UserError
from tfface.evaluation.comparison import compare_embeddings
from tfface.evaluation.thresholds import load_threshold
from tfface.recognition.annotate import annotate_comparison
from tfface.recognition.inference import load_embedder

FLAGS = flags.FLAGS
flags.DEFINE_boolean("align", True, "Detect and align the faces as the model's training faces were.")
flags.DEFINE_enum("distance_metric", "0", ["0", "1"], "Without a threshold.json: 0 squared Euclidean, 1 angular.")
flags.DEFINE_string("annotate", "", "Write the photos side by side to this .jpg/.png, faces boxed with their "
                    "distance to the first photo (green: same person, red: different).")


def main(argv) -> None:
    if len(argv) < 4:
        raise UserError("usage: python -m tfface.compare <model> <image> <image> [<image> ...]")
    model_path, paths = argv[1], argv[2:]
    if not os.path.exists(model_path):
        raise UserError(f"model: '{model_path}' does not exist")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(f"image: file(s) not found: {', '.join(missing)}")
    embedder = load_embedder(model_path)
    threshold = load_threshold(embedder.path, embedder.fingerprint)
    if FLAGS.align:
        aligned = embedder.align_files(paths)
        embeddings, boxes = embedder.embed_aligned(aligned), iter(aligned.boxes)
        boxes = [next(boxes) if found else None for found in aligned.found]
    else:
        embeddings, boxes = embedder.embed_files(paths), [None] * len(paths)
    comparison = compare_embeddings(paths, embeddings, threshold, int(FLAGS.distance_metric))
    print(*comparison.lines(), sep="\n")
    if FLAGS.annotate:
        print(f"Annotated: {annotate_comparison(FLAGS.annotate, comparison, boxes)}")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
