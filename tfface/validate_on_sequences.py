"""Set-to-set verification on video sequences, YouTube Faces style (SeqFace reports YTF).

    python -m tfface.validate_on_sequences <frames_dir> <model> [--splits splits.txt]

``frames_dir/<name>/`` holds the aligned frames of sequence ``name`` (YTF:
``aligned_images_DB/<person>/<video>``); the splits file (default ``<frames_dir>/splits.txt``)
is YTF's: ``split, first name, second name, ..., is same``. A sequence is the aggregation of its
frames' L2-normalised embeddings (``--aggregation mean|median``); every split is held out once.
Prints the per-split table and facenet's lines (``Accuracy: 0.98000+-0.00500`` ...).
"""
from __future__ import annotations

import os

from absl import flags

from tfface.core.errors import check_positive
from tfface.evaluation.sequences import AGGREGATIONS, evaluate_sequences
from tfface.tools import cli, evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("splits", "", "YTF-format splits file (default: <frames_dir>/splits.txt).")
flags.DEFINE_enum("aggregation", "mean", sorted(AGGREGATIONS), "How frame embeddings make a sequence embedding.")
flags.DEFINE_integer("frames_per_sequence", 0, "Use this many evenly spaced frames per sequence (0: all).")
flags.DEFINE_integer("batch_size", 100, "Number of frames to embed in a batch.")
flags.DEFINE_enum("distance_metric", "0", ["0", "1"], "0: squared Euclidean, 1: angular (cosine).")
flags.DEFINE_float("far_target", 1e-3, "False accept rate at which the validation rate is reported.")
flags.DEFINE_string("output_json", "", "Write every number (per split, ROC points, pair distances) to this JSON file.")
flags.DEFINE_string("roc_plot", "", "Write the ROC (AUC, EER) and distance histograms to this PNG file.")


def main(argv) -> None:
    frames_dir, model_path = cli.data_and_model(argv, "tfface.validate_on_sequences", "frames_dir")
    evaluation.check_settings(FLAGS.batch_size, "--batch_size")
    check_positive(FLAGS.frames_per_sequence, "--frames_per_sequence", allow_zero=True)
    splits = FLAGS.splits or os.path.join(frames_dir, "splits.txt")
    embedder = evaluation.load_model(model_path)
    metric = int(FLAGS.distance_metric)
    result = evaluate_sequences(
        embedder.embed, frames_dir, splits, embedder.image_size, FLAGS.aggregation, FLAGS.frames_per_sequence,
        FLAGS.batch_size, metric, FLAGS.far_target, progress=True,
    )
    print(*result.fold_table(), sep="\n")
    print(*result.summary_lines(), sep="\n")
    settings = {"frames_dir": frames_dir, "splits": splits, "aggregation": FLAGS.aggregation,
                "frames_per_sequence": FLAGS.frames_per_sequence, "distance_metric": metric,
                "far_target": FLAGS.far_target}
    name = os.path.basename(os.path.normpath(frames_dir))
    evaluation.report(embedder, settings, {name: result}, FLAGS.output_json, FLAGS.roc_plot)


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
