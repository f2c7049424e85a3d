"""The worked example of training on your own photos: the ORL faces (AT&T, 40 people x 10 grey
photos; testdata holds 30 of them).

    python -m tfface.recipes.orl --output_dir runs/orl      # or: make orl

Aligns every photo with MTCNN, trains on the first ``--num_train_identities`` people (s1-s20),
exports the model, then judges it on the people it never saw (s21-s30): LFW-protocol
verification on all their same-person pairs plus as many different-person pairs, next to
raw-pixel and eigenfaces baselines on the same pairs and folds, and facenet's SVM classifier
trained on photos 1-5 of each and tested on photos 6-10; then the transfer check, verification
of raw colour photos of other people (``--transfer_pairs``, aligned by the model). Prints each
stage's time and the numbers, and writes them to ``OUTPUT_DIR/results.json``. Rerunning resumes finished stages.

With ``--pretrained dlib_resnet_v1`` the faces are cut as that model's (dlib chips, 150 px), the
model is fine-tuned from it (``PRETRAINED_TRAINING`` on top of the flagfile), and the same pairs
also judge the pretrained model as it is and the same network trained from scratch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess

from absl import flags

from tfface.tools import cli
from tfface.data.tfrecord import write_json_atomic
from tfface.core.errors import UserError, check_dir, check_file
from tfface.recipes import own_photos

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where the recipe writes everything (resumed when it exists).")
flags.DEFINE_string("orl_dir", "../shared/testdata/orl", "ORL photos: <orl_dir>/s<k>/<n>.pgm.")
flags.DEFINE_integer("num_train_identities", 20, "Train on s1..sN; the other identities are never seen in training.")
flags.DEFINE_string("train_flagfile", os.path.join(CONFIGS, "orl.flags"), "train_softmax flags of the recipe.")
flags.DEFINE_list("train_overrides", [], "More train_softmax flags, e.g. --max_nrof_epochs=2 (comma separated).")
flags.DEFINE_enum("alignment", "facenet_crop", ["facenet_crop", "arcface", "sphereface"], "How faces are aligned.")
flags.DEFINE_integer("aligned_size", 36, "Side of the aligned faces in pixels.")
flags.DEFINE_integer("aligned_margin", 16, "facenet_crop margin around the detected box (original pixels).")
flags.DEFINE_integer("nrof_train_images_per_class", 5, "Classifier: photos 1..N of each unseen person train it.")
flags.DEFINE_boolean("use_flipped_images", True, "Verification embeds each face and its mirror image.")
flags.DEFINE_integer("seed", 0, "Seed of the different-person pairs.")
flags.DEFINE_enum("pretrained", "", ["", "dlib_resnet_v1"], "Fine-tune this pretrained model (its alignment and "
                  "size) and also report it as it is and the same network trained from scratch.")
flags.DEFINE_string("transfer_pairs", "../shared/testdata/faces/pairs.csv",
                    "Transfer check: file_x,file_y,Decision pairs of raw photos of other people, aligned by the "
                    "model itself ('' skips it).")


#: train_softmax flags of fine-tuning (and of the from-scratch comparison) with --pretrained, per model.
PRETRAINED_TRAINING = {
    "dlib_resnet_v1": ["--model_def=dlib_resnet_v1", "--image_size=150", "--embedding_size=128", "--standardization=dlib",
                       "--norandom_crop", "--batch_size=20", "--epoch_size=10", "--max_nrof_epochs=2",
                       "--learning_rate=1e-5", "--weight_decay=0", "--log_every_n_steps=5"],
}


def _identities(orl_dir: str) -> list[str]:
    names = [d for d in os.listdir(orl_dir) if os.path.isdir(os.path.join(orl_dir, d)) and not d.startswith(".")]
    return sorted(names, key=lambda d: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", d)])


def main(argv) -> None:
    from tfface.recognition.inference import load_embedder

    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; all options are --flags")
    if not FLAGS.output_dir:
        raise UserError("--output_dir is required")
    check_dir(FLAGS.orl_dir, "--orl_dir")
    orl_dir = os.path.abspath(FLAGS.orl_dir)
    check_file(FLAGS.train_flagfile, "--train_flagfile")
    if FLAGS.transfer_pairs:
        check_file(FLAGS.transfer_pairs, "--transfer_pairs")
    alignment, aligned_size, aligned_margin = FLAGS.alignment, FLAGS.aligned_size, FLAGS.aligned_margin
    pretrained_training = []
    if FLAGS.pretrained:
        from tfface.importers import load_pretrained

        recorded = load_pretrained(FLAGS.pretrained).alignment
        alignment, aligned_size, aligned_margin = recorded["align"], recorded["image_size"][0], int(recorded["margin"])
        pretrained_training = PRETRAINED_TRAINING[FLAGS.pretrained]
    names = _identities(orl_dir)
    if not 2 <= FLAGS.num_train_identities <= len(names) - 2:
        raise UserError(f"--num_train_identities: expected 2..{len(names) - 2} for the {len(names)} identities "
                        f"of '{FLAGS.orl_dir}', got {FLAGS.num_train_identities}")
    out = os.path.abspath(FLAGS.output_dir)
    seen, unseen = names[:FLAGS.num_train_identities], names[FLAGS.num_train_identities:]
    stages = own_photos.Stages()
    photos = {split: os.path.join(out, "photos", split) for split in ("train", "unseen")}
    aligned = {split: os.path.join(out, "aligned", split) for split in ("train", "unseen")}
    stages.run("prepare", lambda: [own_photos.lfw_layout(orl_dir, photos["train"], seen),
                                   own_photos.lfw_layout(orl_dir, photos["unseen"], unseen)])

    def align():
        for split, output_format in (("train", "tfrecord"), ("unseen", "folders")):
            subprocess.run(own_photos.align_command(photos[split], aligned[split], alignment, aligned_size,
                                                    aligned_margin, output_format), check=True)
        return [own_photos.read_json(os.path.join(aligned[split], "align_report.json")) for split in aligned]

    reports = stages.run("align", align)
    misses = [f"{split}/{entry['path']} ({entry['reason']})" for split, report in zip(aligned, reports)
              for entry in report["skipped_files"]]
    total = sum(report["photos"] for report in reports)
    overrides = pretrained_training + [f"--{flag.lstrip('-')}" for flag in FLAGS.train_overrides]

    def train(subdir: str, extra: list[str]) -> None:
        command = own_photos.train_command(FLAGS.train_flagfile, aligned["train"], out, subdir, extra + overrides)
        print(" ".join(command), flush=True)
        stages.run("train" if subdir == "model" else f"train {subdir}", subprocess.run, command, check=True, cwd=os.path.dirname(CONFIGS))  # flagfile paths

    def verify(name: str, model_dir: str) -> own_photos.Verification:
        return stages.run("verify" if name == "model" else f"verify {name}", own_photos.verification, load_embedder(model_dir), aligned["unseen"],
                          photos["unseen"], photos["train"], os.path.join(out, "pairs.txt"), FLAGS.use_flipped_images,
                          FLAGS.seed)

    train("model", [f"--pretrained_model={FLAGS.pretrained}"] if FLAGS.pretrained else [])
    embedder = load_embedder(os.path.join(out, "model"))
    verified = verify("model", os.path.join(out, "model"))
    compared = {}
    if FLAGS.pretrained:
        compared["pretrained, as it is"] = verify("pretrained", stages.run(
            "export pretrained", own_photos.export_pretrained, FLAGS.pretrained, os.path.join(out, "pretrained")))
        train("scratch", [])
        compared["same network from scratch"] = verify("scratch", os.path.join(out, "scratch"))
    accuracy = stages.run("classify", own_photos.classification, embedder, aligned["unseen"],
                          os.path.join(out, "classifier.skops"), FLAGS.nrof_train_images_per_class)
    transfer = None
    if FLAGS.transfer_pairs:
        transfer = stages.run("transfer", own_photos.transfer, embedder, FLAGS.transfer_pairs)
    results = {
        "verification": {"model": verified.model, "model_std": verified.model_std, "raw_pixels": verified.raw_pixels,
                         "raw_pixels_aligned": verified.raw_pixels_aligned, "eigenfaces": verified.eigenfaces,
                         "num_pairs": verified.num_pairs},
        "compared": {name: {"model": v.model, "model_std": v.model_std} for name, v in compared.items()},
        "classifier_accuracy": accuracy,
        "transfer": dataclasses.asdict(transfer) if transfer else None,
        "aligned": total - len(misses), "photos": total, "misses": misses,
        "stage_seconds": stages.seconds, "model": embedder.path, "unseen_identities": unseen,
    }
    write_json_atomic(os.path.join(out, "results.json"), results)
    print(f"\n{'stage':<10}{'seconds':>9}")
    for name, seconds in stages.seconds.items():
        print(f"{name:<10}{seconds:>9.1f}")
    print(f"{'total':<10}{sum(stages.seconds.values()):>9.1f}")
    print(f"\nAligned {total - len(misses)}/{total} photos; no face in: {', '.join(misses) or 'none'}")
    print(f"Verification of the {len(unseen)} unseen people ({verified.num_pairs} pairs, 10 folds):")
    print(*verified.summary_lines, sep="\n")
    print(f"  {'tfface model' + (' (fine-tuned)' if FLAGS.pretrained else ''):<34}{verified.model:.4f}+-{verified.model_std:.4f}")
    for name, other in compared.items():
        print(f"  {name:<34}{other.model:.4f}+-{other.model_std:.4f}")
    print(f"  {'raw pixels (original photos)':<34}{verified.raw_pixels:.4f}")
    print(f"  {'raw pixels (aligned faces)':<34}{verified.raw_pixels_aligned:.4f}")
    print(f"  {'eigenfaces (PCA-50, whitened)':<34}{verified.eigenfaces:.4f}")
    print(f"Classifier accuracy (photos 1-{FLAGS.nrof_train_images_per_class} train, the rest test): {accuracy:.3f}")
    if transfer:
        print(f"Transfer to {FLAGS.transfer_pairs} (raw photos, aligned by the model; {transfer.num_pairs} pairs, "
              f"{transfer.same_pairs} same-person, {transfer.dropped_pairs} dropped: no face in "
              f"{', '.join(transfer.photos_without_face) or 'none'}):")
        print(f"  accuracy {transfer.accuracy:.4f}+-{transfer.accuracy_std:.4f} (always 'different': "
              f"{1 - transfer.same_pairs / transfer.num_pairs:.4f}), AUC {transfer.auc:.3f}")
    print(json.dumps({"results": os.path.join(out, "results.json")}))


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
