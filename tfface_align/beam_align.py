"""Detect and align a photo collection on Apache Beam: the same faces as ``align_dataset_mtcnn``.

    python -m tfface_align.beam_align --input_pattern 'raw/*/*' --output_dir aligned \\
        [--align arcface] [--runner DirectRunner|DataflowRunner|FlinkRunner|SparkRunner] \\
        [Beam pipeline options: --project, --region, --temp_location, --num_workers, ...]

Needs the optional extra: ``pip install tfface[beam]``. The identity of a photo is its folder's
name. Writes TFRecord shards + ``dataset_info.json`` (the tfface schema) and ``failures.jsonl``
(one line per photo without a face or that could not be read) to ``--output_dir``.
"""
from __future__ import annotations

from typing import Sequence

from absl import flags

from tfface.tools.cli import run_main
from tfface.core.errors import UserError, check_positive
from tfface_align.aligner import ALIGNMENTS

FLAGS = flags.FLAGS
flags.DEFINE_string("input_pattern", None, "Photos to align, a glob on any Beam filesystem ('raw/*/*', "
                    "'gs://bucket/raw/*/*.jpg'); each photo's identity is its folder's name.")
flags.DEFINE_string("output_dir", None, "Where the TFRecord shards, dataset_info.json and failures.jsonl go.")
flags.DEFINE_string("runner", "DirectRunner", "Beam runner: DirectRunner, DataflowRunner, FlinkRunner, SparkRunner...")
flags.DEFINE_enum("align", "arcface", ALIGNMENTS, "facenet_crop: box + margin, resized (facenet); "
                  "arcface: 5-point similarity transform to 112x112; sphereface: to 112x96.")
flags.DEFINE_integer("image_size", None, "Side of the aligned images (default 182 facenet_crop, 112 otherwise).")
flags.DEFINE_integer("margin", 44, "facenet_crop: margin around the detected box, in original pixels.")
flags.DEFINE_boolean("detect_multiple_faces", False, "Align every face found, not only the main one.")
flags.DEFINE_integer("min_face_size", 20, "MTCNN: smallest face to find, in pixels.")
flags.DEFINE_integer("batch_size", 16, "Photos detected per batch on a worker.")
flags.DEFINE_integer("num_shards", 0, "TFRecord shards; 0 lets the runner choose.")


def main(argv: Sequence[str]) -> None:
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise UserError("beam_align needs Apache Beam: pip install 'tfface[beam]'") from None
    from tfface_align.beam_pipeline import build_pipeline

    for name in ("input_pattern", "output_dir"):
        if not getattr(FLAGS, name):
            raise UserError(f"--{name}: required")
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.match([FLAGS.input_pattern])[0].metadata_list:
        raise UserError(f"--input_pattern: no file matches '{FLAGS.input_pattern}'")
    check_positive(FLAGS.batch_size, "--batch_size")
    check_positive(FLAGS.num_shards, "--num_shards", allow_zero=True)
    options = PipelineOptions(list(argv[1:]), runner=FLAGS.runner, save_main_session=False)
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, FLAGS.input_pattern, FLAGS.output_dir, FLAGS.align, FLAGS.image_size, FLAGS.margin,
                       FLAGS.detect_multiple_faces, FLAGS.min_face_size, FLAGS.batch_size, FLAGS.num_shards)
    print(f"Aligned faces written to {FLAGS.output_dir} (dataset_info.json, failures.jsonl)")


def run() -> None:
    run_main(main, known_only=True)  # flags absl does not know are Beam pipeline options


if __name__ == "__main__":
    run()
