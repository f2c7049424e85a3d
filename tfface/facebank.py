"""``python -m tfface.facebank`` / ``tfface-facebank``: build and use a facebank.

    tfface-facebank build PHOTOS_DIR --facebank DIR --model MODEL    # PHOTOS_DIR/<name>/<photos>
    tfface-facebank add NAME photo.jpg ... --facebank DIR --model MODEL
    tfface-facebank add NAME --from_camera 0 --facebank DIR --model MODEL
    tfface-facebank remove NAME --facebank DIR
    tfface-facebank list --facebank DIR
    tfface-facebank identify photo.jpg ... --facebank DIR --model MODEL [--threshold T] [--top_k K] [--annotate OUT_DIR]
    tfface-facebank reindex --facebank DIR [--index SPEC]

``identify`` prints one line per face, ``<photo>: <name> <distance> [x1, y1, x2, y2]``, with
``Unknown`` beyond the model's calibrated ``threshold.json`` (or ``--threshold``), then with
``--top_k`` K > 1 the next nearest people as ``<name>:<distance>``. ``--index`` (build, reindex)
picks what searches the bank: ``faiss`` (in process), ``milvus://HOST:PORT`` or a milvus-lite
``FILE.db``; the bank remembers it. ``reindex`` rebuilds the search index from the bank.
"""
from __future__ import annotations

from absl import flags

from tfface.tools import cli
from tfface.core.errors import UserError
from tfface.recognition.facebank import FaceBank, model_threshold

FLAGS = flags.FLAGS
flags.DEFINE_string("facebank", None, "The facebank directory.")
flags.DEFINE_string("model", None, "Exported model (version, model or run directory).")
flags.DEFINE_float("threshold", None, "Distance beyond which a face is Unknown (default: the model's threshold.json).")
flags.DEFINE_enum("distance_metric", "0", ["0", "1"], "With --threshold: 0 squared Euclidean, 1 angular.")
flags.DEFINE_string("from_camera", None, "add: enrol from this camera (index, device or stream URL).")
flags.DEFINE_integer("max_frames", 300, "add --from_camera: give up after this many frames.")
flags.DEFINE_float("min_face_fraction", 0.2,
                   "add --from_camera: smallest face side, share of the frame's shorter side.")
flags.DEFINE_float("min_sharpness", 100.0, "add --from_camera: smallest variance of the face's Laplacian.")
flags.DEFINE_integer("min_face_size", 20, "MTCNN: smallest face to find, in pixels.")
flags.DEFINE_string("index", None, "build, reindex: 'faiss' (default), 'milvus://HOST:PORT' or a milvus-lite FILE.db.")
flags.DEFINE_integer("top_k", 1, "identify: also print the next nearest people up to this many.", lower_bound=1)
flags.DEFINE_string("annotate", "", "identify: write each photo into this directory with its faces boxed, "
                    "named and their distances.")
flags.DEFINE_float("min_quality", None, "build/add: skip faces whose quality score (the model's pre-normalisation "
                   "embedding norm, see docs/quality_heads.md) is below this; they are listed with their scores.")

USAGE = ("usage: tfface-facebank build PHOTOS_DIR | add NAME [PHOTO...] | remove NAME | list | identify PHOTO... "
         "| reindex --facebank DIR")


def _embedder():
    from tfface.recognition.inference import load_embedder

    if not FLAGS.model:
        raise UserError("--model: required for this command")
    return load_embedder(FLAGS.model)


def _detector():
    import tfface_align

    return tfface_align.MTCNN(min_face_size=FLAGS.min_face_size)


def _report(report) -> None:
    for photo, why in report.skipped:
        print(f"skipped {photo}: {why}")
    print(f"{sum(report.used.values())} photos of {len(report.used)} people used, {len(report.skipped)} skipped")


def build(args) -> None:
    if len(args) != 1:
        raise UserError("usage: tfface-facebank build PHOTOS_DIR --facebank DIR --model MODEL")
    bank, report = FaceBank.build(args[0], _embedder(), _detector(), index=FLAGS.index, min_quality=FLAGS.min_quality)
    bank.save(FLAGS.facebank)
    _report(report)
    print(f"Facebank '{FLAGS.facebank}': {len(bank.names)} people")


def add(args) -> None:
    if not args or (len(args) > 1) == bool(FLAGS.from_camera):
        raise UserError("usage: tfface-facebank add NAME PHOTO... | add NAME --from_camera N")
    embedder, detector = _embedder(), _detector()
    bank = FaceBank.load(FLAGS.facebank, embedder)
    photos = args[1:]
    if FLAGS.from_camera:
        from tfface.recognition.video import enrolment_frame, open_capture, released

        with released(open_capture(FLAGS.from_camera)) as capture:
            frame, index = enrolment_frame(capture, detector, FLAGS.min_face_fraction, FLAGS.min_sharpness,
                                           FLAGS.max_frames, lambda i, why: print(f"frame {i}: {why}"))
        photos = [frame]
        print(f"captured frame {index}")
    _report(bank.add_person(args[0], photos, embedder, detector, FLAGS.min_quality))
    bank.save(FLAGS.facebank)
    print(f"Facebank '{FLAGS.facebank}': {len(bank.names)} people")


def remove(args) -> None:
    if len(args) != 1:
        raise UserError("usage: tfface-facebank remove NAME --facebank DIR")
    bank = FaceBank.load(FLAGS.facebank)
    bank.remove_person(args[0])
    bank.save(FLAGS.facebank)
    print(f"Facebank '{FLAGS.facebank}': {len(bank.names)} people")


def list_people(args) -> None:
    bank = FaceBank.load(FLAGS.facebank)
    for name, count in zip(bank.names, bank.counts):
        print(f"{name}\t{count} photos")
    print(f"{len(bank.names)} people, model fingerprint {bank.fingerprint}")


def identify(args) -> None:
    import cv2

    from tfface.core import images
    from tfface.recognition import annotate
    from tfface.recognition.video import Recognizer

    if not args:
        raise UserError("usage: tfface-facebank identify PHOTO... --facebank DIR --model MODEL")
    embedder = _embedder()
    bank = FaceBank.load(FLAGS.facebank, embedder)
    threshold, metric, source = model_threshold(embedder, FLAGS.threshold, int(FLAGS.distance_metric))
    print(f"threshold {threshold:g} (distance metric {metric}) from {source}")
    recognizer = Recognizer(embedder, bank, threshold, metric, _detector(), flip=True, top_k=FLAGS.top_k)
    written: set[str] = set()
    for photo in args:
        image = images.load(photo)
        faces = recognizer.recognize([image])[0]
        if not faces:
            print(f"{photo}: no face")
        for face in faces:
            also = "".join(f" {name}:{distance:.4f}" for name, distance in face.candidates)
            print(f"{photo}: {face.name} {face.distance:.4f} {[round(v) for v in face.box]}{also}")
        if FLAGS.annotate:
            path = annotate.annotated_name(FLAGS.annotate, photo, written)
            annotate.write_image(path, annotate.draw_faces(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), faces))
    if FLAGS.annotate:
        print(f"Annotated photos: {FLAGS.annotate}")


def reindex(args) -> None:
    bank = FaceBank.load(FLAGS.facebank, rebuild_index=True)
    bank.index_spec = FLAGS.index or bank.index_spec
    print(f"Facebank '{FLAGS.facebank}': {len(bank.names)} people searched by {bank.index_kind()}")
    bank.save(FLAGS.facebank)


COMMANDS = {"build": build, "add": add, "remove": remove, "list": list_people, "identify": identify,
            "reindex": reindex}


def main(argv) -> None:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise UserError(USAGE)
    if not FLAGS.facebank:
        raise UserError("--facebank: required (the facebank directory)")
    COMMANDS[argv[1]](argv[2:])


def run() -> None:
    cli.run_main(main)


if __name__ == "__main__":
    run()
