import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfface
from tfface.errors import UserError
from tfface.export import META_FILE, export_saved_model, model_fingerprint
from tfface.images import resize
from tfface.inference import load_embedder, resolve_saved_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    embedder = tfface.models.build_embedder("mobilefacenet", (32, 48), 16, "minus_one_to_one")
    warmup = np.random.default_rng(9).uniform(0, 255, (8, 32, 48, 3)).astype(np.float32)
    for _ in range(40):  # BatchNorm statistics of real activations, so embeddings are not ~0
        embedder(warmup, training=True)
    first = export_saved_model(embedder, str(base), "faces")
    second = export_saved_model(embedder, str(base), "faces")
    return embedder, base, first, second


def test_versions_layout_and_metadata(exported):
    _, base, first, second = exported
    assert first.endswith(os.path.join("faces", "1")) and second.endswith(os.path.join("faces", "2"))
    assert sorted(os.listdir(base / "faces")) == ["1", "2"]  # no temporary directories left
    meta = json.load(open(os.path.join(second, META_FILE)))
    fingerprint = meta.pop("fingerprint")
    assert meta == {"image_size": [32, 48], "standardization": "minus_one_to_one", "backbone": "mobilefacenet",
                    "embedding_size": 16, "alignment": None}
    embedder = exported[0]
    assert fingerprint == model_fingerprint(embedder, meta) == load_embedder(second).fingerprint
    embedder.weights[-1].assign(embedder.weights[-1] + 1.0)  # other weights, other fingerprint
    assert model_fingerprint(embedder, meta) != fingerprint
    embedder.weights[-1].assign(embedder.weights[-1] - 1.0)
    assert resolve_saved_model(str(base)) == second and resolve_saved_model(first) == first


def test_served_embeddings_equal_the_keras_model(exported):
    embedder, base, _, _ = exported
    loaded = load_embedder(str(base))
    assert loaded.image_size == (32, 48) and loaded.standardization == "minus_one_to_one"
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 48, 3)).astype(np.uint8)
    expected = tf.math.l2_normalize(embedder(images.astype(np.float32), training=False), 1).numpy()
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


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no SavedModel"):
        resolve_saved_model(str(tmp_path))
