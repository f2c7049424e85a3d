"""Evaluate an exported model on InsightFace ``.bin`` sets (LFW, CFP-FP, AgeDB-30, ...), no MXNet.

    python -m tfface.validate_on_bins <model> --bins_dir DIR [--targets lfw,cfp_fp,agedb_30]

Each ``<bins_dir>/<target>.bin`` is read with a data-only unpickler (a file asking for anything
but images and labels is refused, nothing in it is run), decoded through the image contract at
the model's image size, embedded with InsightFace's flip TTA (``--noflip`` to turn it off) and
scored with facenet's 10-fold protocol. Prints a per-fold table per set, then the table::

    set         pairs  accuracy           threshold  VAL@FAR            AUC     EER
    lfw          6000  0.99650+-0.00252     1.42000  0.98367@0.00100    0.9990  0.0040
    [lfw]Accuracy-Flip: 0.99650+-0.00252

``--output_json`` / ``--roc_plot`` keep every number and a ROC + histogram PNG;
``--save_threshold`` writes ``threshold.json`` next to the model, calibrated on
``--threshold_set`` without flip (as single-image uses embed).
"""
from __future__ import annotations

from absl import flags

from tfface.core.errors import UserError, check_dir
from tfface.evaluation.benchmarks import evaluate_bins, table
from tfface.evaluation.bins import TARGETS
from tfface.evaluation.thresholds import save_calibrated
from tfface.tools import cli, evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("bins_dir", "", "Directory holding <target>.bin files.")
flags.DEFINE_list("targets", ["lfw", "cfp_fp", "agedb_30"], f"Sets to evaluate (<bins_dir>/<name>.bin), e.g. {','.join(TARGETS)}.")
flags.DEFINE_integer("batch_size", 100, "Number of images to embed in a batch.")
flags.DEFINE_boolean("flip", True, "InsightFace's flip TTA: embedding of image + its mirror, re-normalised.")
flags.DEFINE_integer("nrof_folds", 10, "Number of folds of the cross-validation.")
flags.DEFINE_enum("distance_metric", "0", ["0", "1"], "0: squared Euclidean, 1: angular (cosine).")
flags.DEFINE_float("far_target", 1e-3, "False accept rate at which the validation rate is reported.")
flags.DEFINE_string("output_json", "", "Write every number (per fold, ROC points, pair distances) to this JSON file.")
flags.DEFINE_string("roc_plot", "", "Write the ROC (AUC, EER) and distance histograms to this PNG file.")
flags.DEFINE_boolean("save_threshold", False, "Write threshold.json next to the model (calibrated without flip).")
flags.DEFINE_string("threshold_set", "", "Set the threshold is calibrated on (default: the first target).")


def main(argv) -> None:
    if len(argv) != 2:
        raise UserError("usage: python -m tfface.validate_on_bins <model> --bins_dir DIR [--targets lfw,...]")
    check_dir(FLAGS.bins_dir, "--bins_dir")
    if not FLAGS.targets:
        raise UserError("--targets: give at least one set name")
    evaluation.check_settings(FLAGS.batch_size, "--batch_size", FLAGS.nrof_folds, "--nrof_folds")
    threshold_set = FLAGS.threshold_set or FLAGS.targets[0]
    if FLAGS.save_threshold and threshold_set not in FLAGS.targets:
        raise UserError(f"--threshold_set: {threshold_set!r} is not one of --targets {FLAGS.targets}")
    embedder = evaluation.load_model(argv[1])
    metric = int(FLAGS.distance_metric)
    results = evaluate_bins(
        embedder.embed, FLAGS.bins_dir, FLAGS.targets, embedder.image_size, FLAGS.batch_size, FLAGS.flip,
        FLAGS.nrof_folds, metric, FLAGS.far_target, progress=True,
    )
    for name, bench in results.items():
        print(f"[{name}] per fold:", *bench.result.fold_table(), sep="\n")
    print(*table(results), sep="\n")
    settings = {"bins_dir": FLAGS.bins_dir, "flip": FLAGS.flip, "nrof_folds": FLAGS.nrof_folds,
                "distance_metric": metric, "far_target": FLAGS.far_target}
    reported = {name: bench.result for name, bench in results.items()}
    evaluation.report(embedder, settings, reported, FLAGS.output_json, FLAGS.roc_plot)
    if FLAGS.save_threshold:
        print(save_calibrated(results[threshold_set].plain, metric, f"{threshold_set}.bin", embedder.path,
                              embedder.fingerprint))


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
