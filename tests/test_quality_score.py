"""The face-quality score: exports' ``quality`` output, Embedder access, ``facebank --min_quality``
and recognition from a track's best-quality frames."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfface_align
from tests import facebank_model as fm
from tfface.core.errors import UserError
from tfface.core.preprocessing import get_standardization
from tfface.export import export_saved_model
from tfface.recognition.facebank import FaceBank, model_threshold
from tfface.recognition.faces import embed_photos
from tfface.recognition.inference import KerasEmbedder, load_embedder
from tfface.recognition.video import BestFrames, Recognizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


def test_every_signature_gives_the_pre_normalisation_norm(tmp_path):
    embedder = fm.tiny_embedder()
    version = export_saved_model(embedder, str(tmp_path), "tiny", warmup_batch_sizes=(1,))
    pixels = np.random.default_rng(0).integers(0, 256, (3, fm.SIZE, fm.SIZE, 3), dtype=np.uint8)
    raw = embedder(pixels.astype(np.float32), training=False).numpy()
    signatures = tf.saved_model.load(version).signatures
    encoded = tf.constant([tf.io.encode_png(p).numpy() for p in pixels])
    standardized = get_standardization("minus_one_to_one")(pixels)
    for name, out in (("serving_default", signatures["serving_default"](images=tf.constant(pixels))),
                      ("embed_encoded", signatures["embed_encoded"](encoded=encoded)),
                      ("embed_float", signatures["embed_float"](images=tf.cast(standardized, tf.float32)))):
        np.testing.assert_allclose(out["quality"], np.linalg.norm(raw, axis=1), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(out["embeddings"], raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    for loaded in (load_embedder(version), KerasEmbedder(_keras_file(embedder, tmp_path))):
        embeddings, quality = loaded.embed_with_quality(pixels)
        assert loaded.has_quality
        np.testing.assert_allclose(quality, np.linalg.norm(raw, axis=1), rtol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def _keras_file(embedder, tmp_path) -> str:
    path = str(tmp_path / "tiny.keras")
    embedder.save(path)
    return path


def _export_without_quality(model_dir: str, dest: str) -> str:
    """A copy of ``model_dir``'s export whose serving_default, as exports before the quality
    output, gives the embeddings only."""
    loaded = tf.saved_model.load(model_dir)
    serving = loaded.signatures["serving_default"]

    class Old(tf.Module):
        def __init__(self):
            super().__init__()
            self.image_size, self.standardization = loaded.image_size, loaded.standardization
            self.backbone, self.loaded = loaded.backbone, loaded

        @tf.function(input_signature=[tf.TensorSpec([None, fm.SIZE, fm.SIZE, 3], tf.uint8, name="images")])
        def serve(self, images):
            return {"embeddings": serving(images=images)["embeddings"]}

    old = Old()
    tf.saved_model.save(old, dest, signatures={"serving_default": old.serve})
    shutil.copytree(os.path.join(model_dir, "assets.extra"), os.path.join(dest, "assets.extra"))
    return dest


@pytest.fixture(scope="module")
def model(orl_dir):
    return load_embedder(fm.orl_model(orl_dir))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tfface.facebank", *args], capture_output=True, text=True,
                          env=ENV, timeout=600)


@pytest.mark.slow
def test_facebank_skips_faces_below_min_quality(orl_dir, model, tmp_path):
    people = tmp_path / "people"
    for i in (1, 2, 3):
        os.makedirs(people / f"s{i}")
        for j in (1, 2, 3, 4):
            shutil.copy(fm.orl_path(orl_dir, i, j), people / f"s{i}" / f"{j}.pgm")
    paths = sorted(str(p) for p in people.glob("*/*.pgm"))
    all_faces = embed_photos(model, tfface_align.MTCNN(), paths, min_quality=0.0)  # every face, with its score
    _, quality = model.embed_with_quality(model.align_files(paths).faces)
    threshold = float(np.median(quality))
    below = {paths[i] for i, q in zip(all_faces.used, quality) if q < threshold}
    assert 0 < len(below) < len(all_faces.used)

    out = _run("build", str(people), "--facebank", str(tmp_path / "bank"), "--model", model.path,
               f"--min_quality={threshold}")
    assert out.returncode == 0, out.stderr[-2000:]
    listed = {line.split()[1].rstrip(":") for line in out.stdout.splitlines() if "below --min_quality" in line}
    assert listed == below
    bank = FaceBank.load(str(tmp_path / "bank"), model)
    assert sum(bank.counts) == len(all_faces.used) - len(below)

    old = _export_without_quality(model.path, str(tmp_path / "old" / "1"))
    assert not load_embedder(old).has_quality
    refused = _run("build", str(people), "--facebank", str(tmp_path / "bank2"), "--model", old, "--min_quality=1")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "--min_quality: the model" in refused.stderr and "has no quality output" in refused.stderr
    assert not os.path.exists(tmp_path / "bank2" / "facebank.json")
    with pytest.raises(UserError, match="--best_frames: the model .* has no quality output"):
        Recognizer(load_embedder(old), bank, None, best_frames=2)


def test_best_frames_keeps_each_tracks_best_embeddings():
    tracker = BestFrames(count=2)
    e = np.eye(4, dtype=np.float32)
    out = tracker.update([(0, 0, 10, 10), (50, 50, 60, 60)], e[[0, 1]], np.array([5.0, 9.0]))
    np.testing.assert_allclose(out, e[[0, 1]])
    # frame 2: face A moved a little and is blurred (low quality): still A's track, A's sharp frame kept
    out = tracker.update([(1, 0, 11, 10)], e[[2]], np.array([1.0]))
    np.testing.assert_allclose(out[0], (e[0] + e[2]) / np.sqrt(2), atol=1e-6)
    out = tracker.update([(1, 1, 11, 11)], e[[3]], np.array([7.0]))  # better than the blurred one
    np.testing.assert_allclose(out[0], (e[0] + e[3]) / np.sqrt(2), atol=1e-6)
    assert len(tracker.tracks) == 1  # face B was not seen: its track ended
    out = tracker.update([(50, 50, 60, 60)], e[[2]], np.array([1.0]))  # a new track
    np.testing.assert_allclose(out, e[[2]])


@pytest.mark.slow
def test_recognizer_names_a_blurred_frame_from_the_sharp_ones(orl_dir, model, tmp_path):
    detector = tfface_align.MTCNN()
    bank, _ = FaceBank.build(_people(orl_dir, tmp_path), model, detector)
    threshold, metric, _ = model_threshold(model)
    photos = [cv2.resize(cv2.imread(fm.orl_path(orl_dir, 2, j)), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
              for j in (8, 9, 9)]
    photos[2] = cv2.GaussianBlur(photos[2], (0, 0), 3.0)
    frames = []  # one face walking right 2 px a frame on a 640x480 background: one track
    for t, photo in enumerate(photos):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        canvas[100:100 + photo.shape[0], 200 + 2 * t:200 + 2 * t + photo.shape[1]] = photo
        frames.append(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB))
    sharp, blurred = frames[:2], frames[2]
    plain = Recognizer(model, bank, threshold, metric, detector).recognize(sharp + [blurred])
    best = Recognizer(model, bank, threshold, metric, detector, best_frames=2).recognize(sharp + [blurred])
    qualities = [faces[0].quality for faces in best]
    assert all(np.isfinite(qualities)) and [f[0].box for f in best] == [f[0].box for f in plain]
    # the last frame is recognised from the track's two best frames: the re-normalised sum of their embeddings
    # (this CosFace model's norm is no quality score; the mechanism is what is checked here)
    from tfface.recognition.faces import aligned_faces, embed_faces_with_quality

    found = detector.detect(sharp + [blurred])
    chips = np.concatenate([aligned_faces(model, image, f.boxes[:1], f.landmarks[:1])[0]
                            for image, f in zip(sharp + [blurred], found)])
    embeddings, quality = embed_faces_with_quality(model, chips, False)
    top = np.argsort(-quality)[:2]
    centre = embeddings[top].sum(axis=0)
    names, distances = bank.identify((centre / np.linalg.norm(centre))[None], threshold, metric)
    assert best[2][0].name == names[0] and best[2][0].distance == pytest.approx(distances[0], rel=1e-5)
    assert json.loads(json.dumps(best[2][0].as_json()))["quality"] == pytest.approx(qualities[2], abs=1e-4)


def _people(orl_dir, tmp_path) -> str:
    for i in (1, 2, 3):
        os.makedirs(tmp_path / "bank_people" / f"s{i}", exist_ok=True)
        for j in (1, 2, 3):
            shutil.copy(fm.orl_path(orl_dir, i, j), tmp_path / "bank_people" / f"s{i}" / f"{j}.pgm")
    return str(tmp_path / "bank_people")


@pytest.mark.slow
def test_train_softmax_with_adaface_on_two_replicas(tmp_path):
    """The real training path: AdaFace under MirroredStrategy; its statistics are checkpointed
    (identical on both replicas) and the export has the quality output."""
    from tfface.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(str(tmp_path / "synthetic"), 12, 4, 20, 2, num_shards=2, seed=3)
    proc = subprocess.run(
        [sys.executable, "-m", "tfface.train_softmax", f"--data_dir={data['train_dir']}",
         f"--models_base_dir={tmp_path / 'runs'}", "--subdir=ada", "--image_size=32", "--embedding_size=16",
         "--batch_size=8", "--epoch_size=3", "--max_nrof_epochs=1", "--head=adaface",
         "--head_kwargs=scale=16,t_alpha=0.5", "--strategy=mirrored", "--cpu_devices=2"],
        capture_output=True, text=True, env=ENV, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ada"
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / "ckpt-1"))
    keys = {k.split("/.ATTRIBUTES")[0]: k for k in reader.get_variable_to_shape_map()}
    mean = [reader.get_tensor(k) for name, k in keys.items() if name.startswith("head/") and "batch_mean" in name]
    assert len(mean) == 1 and mean[0] != 20.0  # moved from its initial value by 3 steps
    exported = load_embedder(str(run_dir))
    assert exported.has_quality
    _, quality = exported.embed_with_quality(np.zeros((2, 32, 32, 3), np.uint8))
    assert np.all(quality > 0)
