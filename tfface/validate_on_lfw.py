"""Evaluate an exported model on LFW (or any LFW-format pairs) with facenet's 10-fold protocol.

    python -m tfface.validate_on_lfw <lfw_dir> <model> [--lfw_pairs pairs.txt]
    python -m tfface.validate_on_lfw <photos_dir> <model> --align [--lfw_pairs pairs.csv]

``lfw_dir`` holds aligned images as ``<name>/<name>_0001.jpg``; ``model`` is a SavedModel
exported by tfface (a version directory, a model directory or a run directory). The image
size and standardization come from the model. With ``--align`` the images are raw photos: each
face is detected and aligned as the model's training faces were (pairs with a photo without a
face are dropped and counted), and ``--lfw_pairs`` may also be a ``file_x,file_y,Decision`` CSV
(paths relative to the CSV). Prints facenet's lines::

    Accuracy: 0.99650+-0.00252
    Validation rate: 0.98367+-0.00948 @ FAR=0.00100
    Area Under Curve (AUC): 1.000
    Equal Error Rate (EER): 0.004

after a per-fold table. ``--output_json`` keeps every number (per fold, ROC points, each pair's
distance), ``--roc_plot`` draws the ROC (AUC, EER) and the same/different distance histograms
with the threshold, ``--save_threshold`` writes ``threshold.json`` next to the model.
"""
from __future__ import annotations

import os

from absl import flags

from tfface.core.errors import UserError
from tfface.evaluation.lfw import evaluate_pairs
from tfface.evaluation.pairs import get_paths, read_pairs
from tfface.evaluation.photo_pairs import evaluate_photo_pairs, read_csv_pairs
from tfface.evaluation.thresholds import save_calibrated
from tfface.tools import cli, evaluation

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
flags.DEFINE_boolean("align", False, "The images are raw photos: detect and align each face as the model's "
                     "training faces were (the alignment recorded in the export).")
flags.DEFINE_string("output_json", "", "Write every number (per fold, ROC points, pair distances) to this JSON file.")
flags.DEFINE_string("roc_plot", "", "Write the ROC (AUC, EER) and distance histograms to this PNG file.")
flags.DEFINE_boolean("save_threshold", False, "Write the cross-validated threshold to threshold.json next to the model.")


def main(argv) -> None:
    lfw_dir, model_path = cli.data_and_model(argv, "tfface.validate_on_lfw", "lfw_dir")
    evaluation.check_settings(FLAGS.lfw_batch_size, "--lfw_batch_size", FLAGS.lfw_nrof_folds, "--lfw_nrof_folds")
    if FLAGS.save_threshold and (FLAGS.use_flipped_images or FLAGS.subtract_mean):
        raise UserError(
            "--save_threshold: a threshold for single-image embeddings cannot be calibrated with "
            "--use_flipped_images or --subtract_mean"
        )
    pairs = FLAGS.lfw_pairs or os.path.join(lfw_dir, "pairs.txt")
    embedder = evaluation.load_model(model_path)
    if FLAGS.image_size and FLAGS.image_size != embedder.image_size[0]:
        raise UserError(f"--image_size={FLAGS.image_size} but the model '{embedder.path}' takes {embedder.image_size}")
    if FLAGS.align:
        paths, issame = read_csv_pairs(pairs) if pairs.endswith(".csv") else get_paths(lfw_dir, read_pairs(pairs))
        aligned = evaluate_photo_pairs(embedder, paths, issame, FLAGS.use_flipped_images, FLAGS.lfw_nrof_folds,
                                       int(FLAGS.distance_metric), FLAGS.subtract_mean, FLAGS.far_target)
        print(f"Pairs: {aligned.num_pairs} evaluated, {aligned.dropped_pairs} dropped (no face found in "
              f"{len(aligned.photos_without_face)} photos{': ' if aligned.photos_without_face else ''}"
              f"{', '.join(aligned.photos_without_face)})")
        result = aligned.result
    else:
        result = evaluate_pairs(
            embedder.embed, lfw_dir, pairs, embedder.image_size, FLAGS.lfw_batch_size, FLAGS.use_flipped_images,
            FLAGS.lfw_nrof_folds, int(FLAGS.distance_metric), FLAGS.subtract_mean, FLAGS.far_target, progress=True,
        )
    print(*result.fold_table(), sep="\n")
    print(*result.summary_lines(), sep="\n")
    settings = {"lfw_dir": lfw_dir, "lfw_pairs": pairs, "use_flipped_images": FLAGS.use_flipped_images,
                "subtract_mean": FLAGS.subtract_mean, "nrof_folds": FLAGS.lfw_nrof_folds,
                "distance_metric": int(FLAGS.distance_metric), "far_target": FLAGS.far_target}
    name = os.path.basename(os.path.normpath(lfw_dir))
    evaluation.report(embedder, settings, {name: result}, FLAGS.output_json, FLAGS.roc_plot)
    if FLAGS.save_threshold:
        print(save_calibrated(result, int(FLAGS.distance_metric), os.path.basename(pairs), embedder.path,
                              embedder.fingerprint))


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
