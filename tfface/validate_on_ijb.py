"""Evaluate an exported model on IJB-B or IJB-C: 1:1 verification and 1:N identification.

    python -m tfface.validate_on_ijb <ijb_dir> <model> --dataset IJBC [--cache_dir ijb_cache]
    python -m tfface.validate_on_ijb <ijb_dir> <model> --dataset IJBC --save_threshold --far 1e-4

``ijb_dir`` is the release folder (``IJB_release/IJBC``: ``meta/``, ``loose_crop/``). Each face
is aligned from the release's five points as the model's training faces were, embedded with and
without a flip (batched, progress bar) into a resumable cache, pooled into templates (media
mean, sum, L2) and scored for every N/D/F variant. Prints InsightFace's table of TAR at FAR (the
nearest-FAR reference rule, then FAR <= target) and, with the 1:N files, CMC and TPIR at FPIR.
``--output_json`` keeps every number, ``--roc_plot`` draws the ROCs, ``--save_threshold`` writes
``threshold.json`` (the plain variant's threshold at ``--far``) next to the model.
"""
from __future__ import annotations

import os

from absl import flags

from tfface.core.errors import UserError, check_positive
from tfface.evaluation.ijb import embed_release, evaluate_release, far_threshold, identification_table, \
    results_dict, verification_table
from tfface.evaluation.ijb_metrics import FARS
from tfface.evaluation.ijb_release import DATASETS, read_release
from tfface.evaluation.outputs import write_json
from tfface.evaluation.thresholds import save_threshold
from tfface.recognition.inference import load_embedder
from tfface.tools import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "IJBC", list(DATASETS), "Which IJB set ijb_dir holds.")
flags.DEFINE_string("cache_dir", "ijb_cache", "Embedding cache folder (one subfolder per set and model); "
                    "a run killed mid-way resumes from it.")
flags.DEFINE_integer("batch_size", 128, "Faces per model call.")
flags.DEFINE_integer("cache_chunk", 2048, "Faces per cache file (the work a killed run can lose).")
flags.DEFINE_integer("workers", 4, "Threads reading and aligning photos.")
flags.DEFINE_boolean("flip", True, "Also embed mirrored faces (needed for the F variants).")
flags.DEFINE_boolean("one_to_n", True, "Run 1:N identification when the release has the gallery/probe files.")
flags.DEFINE_string("output_json", "", "Write every number (all variants, ROC points, counts) to this JSON file.")
flags.DEFINE_string("roc_plot", "", "Write the 1:1 ROC curves of every variant to this PNG file.")
flags.DEFINE_boolean("save_threshold", False, "Write threshold.json next to the model: the plain variant's "
                     "threshold at --far on the IJB template pairs.")
flags.DEFINE_float("far", 1e-4, "False accept rate of --save_threshold (FAR <= this on the impostor pairs).")


def main(argv) -> None:
    ijb_dir, model_path = cli.data_and_model(argv, "tfface.validate_on_ijb", "ijb_dir")
    for value, name in ((FLAGS.batch_size, "--batch_size"), (FLAGS.cache_chunk, "--cache_chunk"),
                        (FLAGS.workers, "--workers")):
        check_positive(value, name)
    if not 0 < FLAGS.far < 1:
        raise UserError(f"--far: expected a rate in (0, 1), got {FLAGS.far}")
    release = read_release(ijb_dir, FLAGS.dataset, with_1n=FLAGS.one_to_n)
    embedder = load_embedder(model_path)
    print(f"Model: {embedder.path} ({embedder.image_size[0]}x{embedder.image_size[1]}, {embedder.standardization})")
    print(f"{FLAGS.dataset}: {len(release.images)} photos, {len(release.face_images)} faces, "
          f"{len(release.pairs)} template pairs, 1:N {'on' if release.probes is not None else 'off'}")
    name = (embedder.fingerprint or os.path.basename(os.path.normpath(embedder.path)))[:16]
    cache_dir = os.path.join(FLAGS.cache_dir, f"{FLAGS.dataset}-{name}")
    faces = embed_release(embedder, release, cache_dir, FLAGS.batch_size, FLAGS.flip, FLAGS.cache_chunk, FLAGS.workers)
    fars = tuple(sorted(set(FARS) | ({FLAGS.far} if FLAGS.save_threshold else set())))
    results = evaluate_release(release, faces, fars=fars)
    print("Left out: " + ", ".join(f"{key} {value}" for key, value in results.counts.items()))
    if faces.unreadable:
        print(f"Unreadable photos: {', '.join(faces.unreadable[:5])}{' ...' if len(faces.unreadable) > 5 else ''}")
    print("Variants: N = keep feature norms, D = weight by detector score, F = add the flipped face, - = off")
    print(*verification_table(results), sep="\n")
    print(*verification_table(results, strict=True), sep="\n")
    print(*identification_table(results), sep="\n")
    if FLAGS.output_json:
        settings = {"ijb_dir": ijb_dir, "dataset": FLAGS.dataset, "flip": FLAGS.flip, "cache_dir": cache_dir}
        write_json(FLAGS.output_json, {"model": embedder.path, "fingerprint": embedder.fingerprint,
                                       "settings": settings, "results": results_dict(results)})
        print(f"Results written to {FLAGS.output_json}")
    if FLAGS.roc_plot:
        from tfface.evaluation.plots import plot_far_roc  # matplotlib only when a plot is asked for

        plot_far_roc(FLAGS.roc_plot, {r.variant.name: r.roc for r in results.variants}, f"{FLAGS.dataset} 1:1 ROC")
        print(f"ROC plot written to {FLAGS.roc_plot}")
    if FLAGS.save_threshold:
        threshold = far_threshold(results, FLAGS.far, embedder.fingerprint)
        path = save_threshold(threshold, embedder.path)
        print(f"Threshold {threshold.value:.6g} (FAR {threshold.far:.2e}, TAR {threshold.tar:.5f}) saved to {path}")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
