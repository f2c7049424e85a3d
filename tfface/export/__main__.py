"""Export an embedder for TF Serving (and TFLite): a trained one, imported weights or a pretrained model.

    python -m tfface.export --model runs/quickstart --export_dir models --model_name faces
    python -m tfface.export --import model.pth --arch ir_se_50 --export_dir models --model_name ir_se_50
    python -m tfface.export --import train.caffemodel --arch seqface_resnet27 --mean mean.binaryproto --export_dir models
    python -m tfface.export --pretrained dlib_resnet_v1 --export_dir models --model_name dlib --with_alignment

``--model`` is a training run directory, its checkpoint directory, or a ``.keras`` file;
``--import`` a weights file of another framework (:mod:`tfface.importers`), whose source file,
SHA-256 and licence note go into the export's metadata; ``--pretrained`` names a model that an
installed package ships. Writes
``<export_dir>/<model_name>/<version>/`` atomically (a new version; existing ones are never
touched): a SavedModel of the embedder's signatures (see :mod:`tfface.export.saved_model`), or
with ``--with_alignment`` one that takes whole photos (:mod:`tfface.export.end_to_end`).
"""
from __future__ import annotations

import tempfile

from absl import flags

from tfface.tools import cli
from tfface.core.errors import UserError

FLAGS = flags.FLAGS

flags.DEFINE_string("model", None, "Run directory, checkpoint directory or .keras file of the embedder.")
flags.DEFINE_string("import", None, "A weights file of another framework to import (see --format, --arch).")
flags.DEFINE_string("format", None, "With --import: the file's format (default: told from its name).")
flags.DEFINE_string("arch", None, "With --import: the backbone the weights are for, when the file does not say.")
flags.DEFINE_string("mean", None, "With --import of a SeqFace .caffemodel: its mean image (mean.binaryproto).")
flags.DEFINE_string("pretrained", None, "A pretrained model by name (e.g. dlib_resnet_v1), from the package that ships it.")
flags.DEFINE_string("weights", None, "With --pretrained: read its weights from this file instead of the package.")
flags.DEFINE_string("export_dir", None, "Base directory: the model goes to <export_dir>/<model_name>/<version>/.")
flags.DEFINE_string("model_name", "", "Model name (default: the backbone name, '_photos' appended with --with_alignment).")
flags.DEFINE_integer("version", 0, "Version number (default 0: one more than the newest version).")
flags.DEFINE_boolean("with_alignment", False, "Export photo -> MTCNN -> alignment -> embeddings as one SavedModel.")
flags.DEFINE_integer("max_faces", 10, "With --with_alignment: faces returned per photo (most probable first).")
flags.DEFINE_float("min_face_size", 20, "With --with_alignment: smallest face side MTCNN looks for, in pixels.")
flags.DEFINE_boolean("tflite", False, "Also write float32 and dynamic-range int8 .tflite files into <version>/tflite/.")
flags.DEFINE_string("threshold", "", "A calibrated threshold.json of this model: gives the verify signature its 'same' output.")
flags.DEFINE_enum("align", "", ["", "arcface", "sphereface", "facenet_crop", "seqface", "dlib"],
                  "How the training faces were aligned, when the run's dataset does not record it (or to override).")
flags.DEFINE_list("align_image_size", [], "With --align: aligned face height,width (or one side).")
flags.DEFINE_float("align_margin", 0.0, "With --align=facenet_crop: the crop margin in pixels.")
flags.DEFINE_boolean("check", False, "Afterwards, run the warm-up requests as TF Serving would (TF1 loader, new process).")


def main(argv) -> None:
    import tfface_align
    from tfface.export import end_to_end, saved_model, sources, tf1_check, tflite

    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]}; all options are --flags")
    if not FLAGS.export_dir:
        raise UserError("--export_dir: required (models are written to <export_dir>/<model_name>/<version>/)")
    imported = sources.load_source(FLAGS.model, FLAGS["import"].value, FLAGS.pretrained,
                                   fmt=FLAGS.format, arch=FLAGS.arch, weights=FLAGS.weights,
                                   **({"mean": FLAGS.mean} if FLAGS.mean else {}))
    embedder, alignment, source = imported
    if FLAGS.align:
        if not FLAGS.align_image_size:
            raise UserError("--align_image_size: required with --align (e.g. 112,112)")
        try:
            size = [int(v) for v in FLAGS.align_image_size]
        except ValueError:
            raise UserError(f"--align_image_size: expected integers, got {FLAGS.align_image_size}") from None
        alignment = sources.make_alignment(FLAGS.align, size * 2 if len(size) == 1 else size, FLAGS.align_margin)
    backbone = saved_model.embedder_metadata(embedder)["backbone"]
    version = FLAGS.version or None
    if FLAGS.with_alignment:
        if FLAGS.threshold:
            raise UserError("--threshold: only for the face embedder export (not with --with_alignment)")
        detector = tfface_align.MTCNN(min_face_size=FLAGS.min_face_size)
        path = end_to_end.export_end_to_end(embedder, FLAGS.export_dir, FLAGS.model_name or f"{backbone}_photos",
                                            alignment, version, FLAGS.max_faces, detector, source=source)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            # a pretrained model's stated threshold, unless --threshold gives a calibrated one
            threshold = FLAGS.threshold or (sources.write_source_threshold(imported, tmp) if not FLAGS.align else None)
            path = saved_model.export_saved_model(
                embedder, FLAGS.export_dir, FLAGS.model_name or backbone, version, alignment, threshold,
                extra=(lambda directory: tflite.export_tflite(embedder, directory)) if FLAGS.tflite else None,
                source=source,
            )
    print(f"Exported model: {path}")
    if FLAGS.check:
        for name, outputs in tf1_check.check_in_fresh_process(path):
            print(f"TF1 loader check: {name} -> " + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in outputs.items()))


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
