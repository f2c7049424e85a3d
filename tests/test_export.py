import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfface
from tfface.core.errors import UserError
from tfface.export import META_FILE, THRESHOLD_FILE, embedder_metadata, export_saved_model, model_fingerprint
from tfface.export import rest, warmup
from tfface.export.saved_model import read_threshold
from tfface.export.sources import load_for_export
from tfface.export.tf1_check import check_in_fresh_process
from tfface.export.versions import TMP_PREFIX, remove_stale_tmp
from tfface.core.images import resize
from tfface.recognition.inference import load_embedder, resolve_saved_model

SIGNATURES = {"serving_default", "embed_encoded", "embed_float", "verify"}


def warm_embedder(backbone="mobilefacenet", size=(32, 48), dim=16, standardization="minus_one_to_one"):
    """A small embedder whose BatchNorm statistics come from real activations (embeddings not ~0)."""
    embedder = tfface.models.build_embedder(backbone, size, dim, standardization)
    batch = np.random.default_rng(9).uniform(0, 255, (8, *size, 3)).astype(np.float32)
    for _ in range(10):
        embedder(batch, training=True)
    return embedder


def keras_embeddings(embedder, images):
    return tf.math.l2_normalize(embedder(np.asarray(images, np.float32), training=False), 1).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    embedder = warm_embedder("sphereface20")
    first = export_saved_model(embedder, str(base), "faces", warmup_batch_sizes=(1,))
    threshold = {"distance_metric": 1, "value": 0.3, "far": 0.001, "tar": 0.9, "calibrated_on": "test pairs",
                 "num_pairs": 10, "fingerprint": embedder_metadata(embedder)["fingerprint"]}
    (base / THRESHOLD_FILE).write_text(json.dumps(threshold))
    second = export_saved_model(embedder, str(base), "faces", threshold=str(base / THRESHOLD_FILE))
    return embedder, base, first, second


def test_versions_layout_and_metadata(exported):
    _, base, first, second = exported
    assert first.endswith(os.path.join("faces", "1")) and second.endswith(os.path.join("faces", "2"))
    assert sorted(os.listdir(base / "faces")) == ["1", "2"]  # no temporary directories left
    meta = json.load(open(os.path.join(second, META_FILE)))
    fingerprint = meta.pop("fingerprint")
    assert meta == {"image_size": [32, 48], "standardization": "minus_one_to_one", "backbone": "sphereface20",
                    "embedding_size": 16, "alignment": None}
    embedder = exported[0]
    assert fingerprint == model_fingerprint(embedder, meta) == load_embedder(second).fingerprint
    embedder.weights[-1].assign(embedder.weights[-1] + 1.0)  # other weights, other fingerprint
    assert model_fingerprint(embedder, meta) != fingerprint
    embedder.weights[-1].assign(embedder.weights[-1] - 1.0)
    assert resolve_saved_model(str(base)) == second and resolve_saved_model(first) == first
    assert json.load(open(os.path.join(second, THRESHOLD_FILE)))["value"] == 0.3
    assert not os.path.exists(os.path.join(first, THRESHOLD_FILE))
    # One warm-up request per signature and batch size.
    assert [(name, inputs[next(iter(inputs))].shape[0]) for name, inputs in warmup.read_requests(second)] == [
        (name, size) for size in warmup.BATCH_SIZES
        for name in ("serving_default", "embed_encoded", "embed_float", "verify")]


def test_served_embeddings_equal_the_keras_model(exported):
    embedder, base, _, _ = exported
    loaded = load_embedder(str(base))
    assert loaded.image_size == (32, 48) and loaded.standardization == "minus_one_to_one"
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 48, 3)).astype(np.uint8)
    expected = keras_embeddings(embedder, images)
    np.testing.assert_allclose(loaded.embed(images), expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(loaded.embed(images), axis=1), 1.0, atol=1e-5)
    encoded = tf.constant([cv2.imencode(".png", im[..., ::-1])[1].tobytes() for im in images])  # cv2 wants BGR
    served = tf.saved_model.load(loaded.path).signatures["embed_encoded"](encoded=encoded)["embeddings"]
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="expected uint8"):
        loaded.embed(images.astype(np.float32))


def test_embed_files_resizes_photos(exported, tmp_path):
    _, base, _, _ = exported
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    loaded = load_embedder(str(base))
    small = resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (32, 48)).numpy()  # the image contract
    np.testing.assert_allclose(loaded.embed_files([str(tmp_path / "a.png")]), loaded.embed(small[None]), atol=1e-6)


def test_every_signature_runs_under_the_tf1_loader_in_a_fresh_process(exported):
    """As TF Serving runs it: saver restore, then the SignatureDef's tensors (warm-up requests replayed)."""
    embedder, _, _, second = exported
    requests = warmup.read_requests(second)
    results = check_in_fresh_process(second)
    assert [name for name, _ in results] == [name for name, _ in requests]
    backbone = embedder.layers[-1]
    for (name, inputs), (_, outputs) in zip(requests, results):
        if name == "verify":
            a, b = keras_embeddings(embedder, inputs["images_a"]), keras_embeddings(embedder, inputs["images_b"])
            angle = np.arccos(np.clip((a * b).sum(1), -1, 1)) / np.pi  # distance_metric 1 of the threshold
            np.testing.assert_allclose(outputs["distance"], angle, atol=2e-3)
            np.testing.assert_array_equal(outputs["same"], outputs["distance"] <= 0.3)
            continue
        if name == "embed_float":
            expected = tf.math.l2_normalize(backbone(inputs["images"], training=False), 1).numpy()
        elif name == "embed_encoded":
            faces = np.stack([tf.io.decode_png(x).numpy() for x in inputs["encoded"]])
            expected = keras_embeddings(embedder, faces)
        else:
            expected = keras_embeddings(embedder, inputs["images"])
        np.testing.assert_allclose(outputs["embeddings"], expected, atol=1e-5, err_msg=name)


def test_saved_model_cli_lists_the_signatures(exported):
    _, _, _, second = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", second, "--all"], capture_output=True, text=True, check=True).stdout
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in out
    for tensor in ("serving_default_images:0", "embed_encoded_encoded:0", "verify_images_a:0", "verify_images_b:0"):
        assert tensor in out
    assert "outputs['same']" in out and "dtype: DT_BOOL" in out


def test_bad_requests_fail_with_clear_messages(exported):
    _, _, first, _ = exported
    signatures = tf.saved_model.load(first).signatures
    assert set(signatures.keys()) == SIGNATURES
    assert set(signatures["verify"].structured_outputs) == {"distance"}  # no threshold, no "same"
    with pytest.raises(tf.errors.InvalidArgumentError, match="images: empty batch"):
        signatures["serving_default"](images=tf.zeros([0, 32, 48, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="encoded: an element is not a JPEG/PNG/GIF/BMP image"):
        signatures["embed_encoded"](encoded=tf.constant([b"this is not an image"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="images: expected faces of 32x48x3 pixels"):
        signatures["serving_default"](images=tf.zeros([1, 40, 40, 3], tf.uint8))  # another size is refused
    with pytest.raises(tf.errors.InvalidArgumentError, match="images_b: expected faces of 32x48x3 pixels"):
        signatures["verify"](images_a=tf.zeros([1, 32, 48, 3], tf.uint8), images_b=tf.zeros([1, 32, 40, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same size"):
        signatures["verify"](images_a=tf.zeros([2, 32, 48, 3], tf.uint8), images_b=tf.zeros([1, 32, 48, 3], tf.uint8))


def test_threshold_must_belong_to_the_model(exported, tmp_path):
    embedder, base, _, _ = exported
    good = json.loads((base / THRESHOLD_FILE).read_text())
    (tmp_path / THRESHOLD_FILE).write_text(json.dumps({**good, "fingerprint": "another model"}))
    with pytest.raises(UserError, match="calibrated on model 'another model'"):
        read_threshold(str(tmp_path), good["fingerprint"])
    (tmp_path / THRESHOLD_FILE).write_text(json.dumps({"value": 1.0}))
    with pytest.raises(UserError, match="needs the keys"):
        read_threshold(str(tmp_path / THRESHOLD_FILE), good["fingerprint"])
    with pytest.raises(UserError, match="already exists"):
        export_saved_model(embedder, str(base), "faces", version=1)


def test_rest_bodies_round_trip(exported):
    embedder, _, _, second = exported
    model = tf.saved_model.load(second)
    faces = np.random.default_rng(2).integers(0, 256, (2, 32, 48, 3)).astype(np.uint8)
    expected = keras_embeddings(embedder, faces)
    pngs = [tf.io.encode_png(f).numpy() for f in faces]
    rows = rest.predict(model, json.dumps({"signature_name": "embed_encoded", "instances": [rest.b64(p) for p in pngs]}))
    # two outputs (embeddings, quality): TF Serving's row format gives one {output: value} per element
    np.testing.assert_allclose(np.array([row["embeddings"] for row in rows["predictions"]]), expected, atol=1e-5)
    assert all(row["quality"] > 0 for row in rows["predictions"])
    for inputs in (faces.tolist(), {"images": faces.tolist()}):
        columns = rest.predict(model, {"inputs": inputs})
        np.testing.assert_allclose(np.array(columns["outputs"]["embeddings"]), expected, atol=1e-5)
    pairs = rest.predict(model, {"signature_name": "verify",
                                 "instances": [{"images_a": faces[0].tolist(), "images_b": faces[1].tolist()}]})
    (pair,) = pairs["predictions"]
    assert set(pair) == {"distance", "same"} and pair["same"] == (pair["distance"] <= 0.3)
    angle = np.arccos(np.clip(expected[0] @ expected[1], -1, 1)) / np.pi
    assert pair["distance"] == pytest.approx(angle, abs=2e-3)
    with pytest.raises(UserError, match=r"input 'images': expected uint8 \[B, 32, 48, 3\], got shape \[1, 40, 40, 3\]"):
        rest.predict(model, {"instances": np.zeros((1, 40, 40, 3), int).tolist()})
    with pytest.raises(UserError, match=r"values in \[0, 255\]"):
        rest.predict(model, {"instances": np.full((1, 32, 48, 3), 300).tolist()})
    with pytest.raises(UserError, match="not valid base64"):
        rest.predict(model, {"signature_name": "embed_encoded", "instances": [{"b64": "%%%"}]})
    with pytest.raises(UserError, match="exactly one of"):
        rest.predict(model, {"instances": [], "inputs": []})
    with pytest.raises(UserError, match="non-empty list"):
        rest.predict(model, {"instances": []})
    with pytest.raises(UserError, match="signature_name: expected one of"):
        rest.predict(model, {"signature_name": "nope", "inputs": []})


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no SavedModel"):
        resolve_saved_model(str(tmp_path))
    (tmp_path / "faces").mkdir()  # a model directory without any version
    with pytest.raises(UserError, match="no SavedModel"):
        load_embedder(str(tmp_path / "faces"))
    with pytest.raises(UserError, match="does not exist"):
        load_for_export(str(tmp_path / "missing.keras"))
    with pytest.raises(UserError, match="no checkpoint found"):
        load_for_export(str(tmp_path))


_KILLED_EXPORT = """
import sys, tfface
from tfface.export import export_saved_model
embedder = tfface.models.build_embedder("sphereface20", (32, 32), 8)
print("built", flush=True)
export_saved_model(embedder, sys.argv[1], "faces")
"""


def test_sigkill_mid_export_leaves_no_version(tmp_path):
    model_dir = tmp_path / "faces"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_EXPORT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "built"
        deadline = time.time() + 300
        while not (model_dir.is_dir() and any(n.startswith(TMP_PREFIX) for n in os.listdir(model_dir))):
            assert proc.poll() is None and time.time() < deadline, "the export ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    names = os.listdir(model_dir)
    assert not [n for n in names if n.isdigit()], names  # nothing TF Serving would load
    with pytest.raises(UserError, match="no SavedModel"):
        resolve_saved_model(str(model_dir))
    assert remove_stale_tmp(str(model_dir)) == names and os.listdir(model_dir) == []  # the next export cleans up


def test_cli_exports_a_checkpoint_and_a_keras_file(tmp_path):
    embedder = warm_embedder("sphereface20", (32, 32), 8, "fixed_image_standardization")
    run = tmp_path / "run"
    tf.train.CheckpointManager(tf.train.Checkpoint(embedder=embedder), str(run / "checkpoints"), 3).save()
    (run / "flags.txt").write_text("--model_def=sphereface20\n--image_size=32\n--embedding_size=8\n"
                                   "--use_fixed_image_standardization\n--data_dir=/nonexistent\n")
    cmd = [sys.executable, "-m", "tfface.export", "--model", str(run / "checkpoints"), "--export_dir",
           str(tmp_path / "out"), "--align=arcface", "--align_image_size=112"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version = str(tmp_path / "out" / "sphereface20" / "1")
    assert f"Exported model: {version}" in proc.stdout
    loaded = load_embedder(version)
    assert loaded.alignment == {"align": "arcface", "image_size": [112, 112], "margin": 0.0}
    faces = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_allclose(loaded.embed(faces), keras_embeddings(embedder, faces), atol=1e-5)
    # A .keras file loads directly, with the same embeddings and fingerprint.
    embedder.save(str(tmp_path / "m.keras"))
    from_keras = load_embedder(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(from_keras.embed(faces), loaded.embed(faces), atol=1e-5)
    assert from_keras.fingerprint == embedder_metadata(embedder)["fingerprint"]
    # A user error: one line, exit code 2, nothing written.
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --model: no checkpoint found")
    assert sorted(os.listdir(tmp_path / "out" / "sphereface20")) == ["1"]
