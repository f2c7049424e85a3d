"""Recognise a facebank's people in a video file or a camera stream (MultiFace's
``infer_on_video`` and ``face_verify``).

    python -m tfface.infer_on_video -f INPUT.mp4 -s OUTPUT.mp4 --facebank DIR --model MODEL
    python -m tfface.infer_on_video --camera 0 --facebank DIR --model MODEL [--no_display]

Boxes and ``name distance`` labels are drawn on the frames written to ``-s``; ``--log_json``
writes per-frame names, boxes and distances. Faces beyond the model's calibrated
``threshold.json`` (or ``--threshold``) are ``Unknown``. ``--every_n_frames k`` recognises every
k-th frame and tracks the boxes in between. Press ``q`` (or Ctrl-C) to stop a camera.
"""
from __future__ import annotations

from absl import flags

from tfface.tools import cli
from tfface.core.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("file", None, "Input video file.", short_name="f")
flags.DEFINE_string("save", None, "Output video with names and boxes (.mp4, .avi...).", short_name="s")
flags.DEFINE_string("camera", None, "Read a camera instead: its index (0), a device path or a stream URL.")
flags.DEFINE_boolean("no_display", False, "Camera: do not show the frames (headless machines).")
flags.DEFINE_string("facebank", None, "The facebank directory (tfface-facebank build).")
flags.DEFINE_string("model", None, "Exported model the facebank was built with.")
flags.DEFINE_float("threshold", None, "Distance beyond which a face is Unknown (default: the model's threshold.json).")
flags.DEFINE_enum("distance_metric", "0", ["0", "1"], "With --threshold: 0 squared Euclidean, 1 angular.")
flags.DEFINE_integer("every_n_frames", 1, "Recognise every n-th frame, track the boxes in between.")
flags.DEFINE_integer("batch_size", 8, "Key frames detected and embedded per batch.")
flags.DEFINE_integer("max_frames", None, "Stop after this many frames.")
flags.DEFINE_string("log_json", None, "Write per-frame names, boxes and distances to this JSON file.")
flags.DEFINE_boolean("tta", False, "Embed every face with its mirror image too (slower).")
flags.DEFINE_integer("best_frames", 0, "> 0: recognise a tracked face from its N best-quality key frames so far "
                     "(needs a model with a quality output; see docs/quality_heads.md).")
flags.DEFINE_integer("min_face_size", 20, "MTCNN: smallest face to find, in pixels.")
flags.DEFINE_boolean("progress", True, "Show frames done and frames/s on stderr.")


def main(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {argv[1:]} (use -f FILE or --camera N)")
    if bool(FLAGS.file) == bool(FLAGS.camera):
        raise UserError("-f/--file or --camera: give exactly one input")
    if FLAGS.best_frames < 0:
        raise UserError(f"--best_frames: expected 0 (off) or a number of frames >= 1, got {FLAGS.best_frames}")
    for name in ("facebank", "model"):
        if not getattr(FLAGS, name):
            raise UserError(f"--{name}: required")
    import tfface_align
    from tfface.recognition.facebank import FaceBank, model_threshold
    from tfface.recognition.inference import load_embedder
    from tfface.recognition.video import Recognizer, open_capture, process_video, released

    capture = open_capture(FLAGS.camera or FLAGS.file)
    embedder = load_embedder(FLAGS.model)
    bank = FaceBank.load(FLAGS.facebank, embedder)
    threshold, metric, source = model_threshold(embedder, FLAGS.threshold, int(FLAGS.distance_metric))
    print(f"{len(bank.names)} people in the facebank; threshold {threshold:g} (distance metric {metric}) from {source}")
    recognizer = Recognizer(embedder, bank, threshold, metric, tfface_align.MTCNN(min_face_size=FLAGS.min_face_size),
                            flip=FLAGS.tta, best_frames=FLAGS.best_frames)
    with released(capture):
        summary = process_video(capture, recognizer, FLAGS.save, FLAGS.log_json, FLAGS.every_n_frames,
                                FLAGS.batch_size if not FLAGS.camera else 1, FLAGS.max_frames,
                                display=bool(FLAGS.camera) and not FLAGS.no_display, progress=FLAGS.progress)
    seen = ", ".join(summary["names"]) or "nobody"
    print(f"{summary['frames']} frames, {summary['frames_per_second']:.1f} frames/s; seen: {seen}")


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
