"""Evaluate an exported model on LFW (or any LFW-format pairs) with facenet's 10-fold protocol.

    python -m tfface.validate_on_lfw <lfw_dir> <model> [--lfw_pairs pairs.txt]

``lfw_dir`` holds aligned images as ``<name>/<name>_0001.jpg``; ``model`` is a SavedModel
exported by tfface (a version directory, a model directory or a run directory). The image
size and standardization come from the model. Prints facenet's lines::

    Accuracy: 0.99650+-0.00252
    Validation rate: 0.98367+-0.00948 @ FAR=0.00100
    Area Under Curve (AUC): 1.000
    Equal Error Rate (EER): 0.004
"""
from __future__ import annotations

import os

from absl import flags

from tfface import cli
from tfface.errors import UserError, check_dir, check_positive
from tfface.evaluation.lfw import evaluate_pairs
from tfface.inference import load_embedder

FLAGS = flags.FLAGS
flags.DEFINE_string("lfw_pairs", "", "The file containing the pairs to use (default: <lfw_dir>/pairs.txt).")
flags.DEFINE_integer("lfw_batch_size", 100, "Number of images to process in a batch.")
flags.DEFINE_integer("image_size", 0, "Ignored unless it contradicts the model (the model records its size).")
flags.DEFINE_integer("lfw_nrof_folds", 10, "Number of folds to use for cross validation.")
flags.DEFINE_enum("distance_metric", "0", ["0", "1"], "0: squared Euclidean, 1: angular (cosine).")
flags.DEFINE_boolean("use_flipped_images", False, "Concatenate embeddings of each image and its mirror.")
flags.DEFINE_boolean("subtract_mean", False, "Subtract the mean embedding of the training folds.")
flags.DEFINE_boolean(
    "use_fixed_image_standardization", True,
    "Accepted for facenet compatibility; the model's own recorded standardization is always used.",
)
flags.DEFINE_float("far_target", 1e-3, "False accept rate at which the validation rate is reported.")


def main(argv) -> None:
    if len(argv) != 3:
        raise UserError("usage: python -m tfface.validate_on_lfw <lfw_dir> <model> [--flags]")
    lfw_dir, model_path = argv[1], argv[2]
    check_dir(lfw_dir, "lfw_dir")
    if not os.path.exists(model_path):
        raise UserError(f"model: '{model_path}' does not exist")
    check_positive(FLAGS.lfw_batch_size, "--lfw_batch_size")
    if FLAGS.lfw_nrof_folds < 2:
        raise UserError(f"--lfw_nrof_folds: expected at least 2, got {FLAGS.lfw_nrof_folds}")
    pairs = FLAGS.lfw_pairs or os.path.join(lfw_dir, "pairs.txt")
    embedder = load_embedder(model_path)
    if FLAGS.image_size and FLAGS.image_size != embedder.image_size[0]:
        raise UserError(f"--image_size={FLAGS.image_size} but the model '{embedder.path}' takes {embedder.image_size}")
    print(f"Model: {embedder.path} ({embedder.image_size[0]}x{embedder.image_size[1]}, {embedder.standardization})")
    result = evaluate_pairs(
        embedder.embed, lfw_dir, pairs, embedder.image_size, FLAGS.lfw_batch_size, FLAGS.use_flipped_images,
        FLAGS.lfw_nrof_folds, int(FLAGS.distance_metric), FLAGS.subtract_mean, FLAGS.far_target,
    )
    print(*result.summary_lines(), sep="\n")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
