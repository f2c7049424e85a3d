"""facenet's SVM classifier: skops files tied to one model, and the CLI on real photos."""
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import skops.io

from tfface.recognition.classification import FORMAT, UNKNOWN, VERSION, load_classifier, save_classifier, train_classifier
from tfface.core.errors import UserError

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _blobs(seed=0, per_class=8):
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(3), per_class)
    embeddings = rng.normal(0, 0.3, (len(labels), 6)) + 2.0 * np.eye(6)[labels]
    return embeddings, labels


@pytest.fixture
def saved(tmp_path):
    embeddings, labels = _blobs()
    classifier = train_classifier(embeddings, labels, ["ann", "bob", "cy"], "fp-a")
    path = str(tmp_path / "people.skops")
    save_classifier(classifier, path)
    return classifier, path


def test_skops_round_trip_predicts_the_same(saved, tmp_path):
    classifier, path = saved
    assert zipfile.is_zipfile(path) and os.listdir(tmp_path) == ["people.skops"]  # no temporary file left
    loaded = load_classifier(path, "fp-a")
    test, truth = _blobs(seed=1, per_class=4)
    names, probabilities = loaded.predict(test)
    assert names == classifier.predict(test)[0]
    np.testing.assert_allclose(probabilities, classifier.predict(test)[1])
    assert names == [["ann", "bob", "cy"][i] for i in truth]
    assert loaded.class_names == ["ann", "bob", "cy"] and loaded.fingerprint == "fp-a"


def test_unknown_below_threshold(saved):
    classifier, _ = saved
    names, probabilities = classifier.predict(np.zeros((1, 6)), unknown_threshold=0.99)
    assert names == [UNKNOWN] and probabilities[0] < 0.99


def test_refuses_another_models_file(saved):
    with pytest.raises(UserError, match="another model"):
        load_classifier(saved[1], "fp-b")


def test_refuses_a_pickle(saved, tmp_path):
    path = tmp_path / "people.pkl"
    path.write_bytes(pickle.dumps((saved[0].model, saved[0].class_names)))
    with pytest.raises(UserError, match="not a skops file"):
        load_classifier(str(path), "fp-a")


def test_refuses_a_skops_file_with_foreign_types(saved, tmp_path):
    path = str(tmp_path / "evil.skops")
    state = {"format": FORMAT, "version": VERSION, "model": saved[0].model, "class_names": ["a"],
             "fingerprint": "fp-a", "embedding_size": 6, "payload": os.system}
    skops.io.dump(state, path)
    with pytest.raises(UserError, match="never contains"):
        load_classifier(path, "fp-a")


def test_refuses_a_damaged_file(saved, tmp_path):
    data = bytearray(open(saved[1], "rb").read())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path = tmp_path / "damaged.skops"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged|not a"):
        load_classifier(str(path), "fp-a")


def test_refuses_another_programs_skops_file(tmp_path):
    path = str(tmp_path / "other.skops")
    skops.io.dump({"weights": np.zeros(3)}, path)
    with pytest.raises(UserError, match="not a tfface classifier"):
        load_classifier(path, "fp-a")


def _dlib_like(seed=0, classes=10, per_class=10, dim=128):
    """Unit embeddings as tight as a dlib model's: same person squared distance about 0.035,
    different people about 0.18 (ORL s21-s30 through the fine-tuned dlib_resnet_v1: 0.031, 0.19)."""
    rng = np.random.RandomState(seed)
    mean = rng.normal(size=dim)
    centres = mean / np.linalg.norm(mean) + 0.29 * rng.normal(size=(classes, dim)) / np.sqrt(dim)
    labels = np.repeat(np.arange(classes), per_class)
    embeddings = centres[labels] + 0.14 * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), labels


def test_names_people_whose_embeddings_lie_close_together():
    # facenet's unscaled SVC + argmax of predict_proba named 0-16 % of these correctly
    embeddings, labels = _dlib_like()
    train = np.tile(np.arange(10), 10) < 5
    names = [f"p{i}" for i in range(10)]
    classifier = train_classifier(embeddings[train], labels[train], names, "fp-a")
    predicted, probabilities = classifier.predict(embeddings[~train])
    assert predicted == [names[i] for i in labels[~train]]
    assert probabilities.min() > 1 / len(names)  # each name more probable than a guess
    # the same people at a 10x wider spread: the same names and probabilities (the scale is fitted)
    wide = train_classifier(embeddings[train] * 10, labels[train], names, "fp-a").predict(embeddings[~train] * 10)
    assert wide[0] == predicted
    np.testing.assert_allclose(wide[1], probabilities, atol=1e-6)


def test_reads_format_1_files_unscaled_and_refuses_a_bad_scale(saved, tmp_path):
    classifier, _ = saved
    test, _ = _blobs(seed=1, per_class=4)
    state = {"format": FORMAT, "version": 1, "model": classifier.model, "class_names": classifier.class_names,
             "fingerprint": "fp-a", "embedding_size": 6}
    skops.io.dump(state, str(tmp_path / "v1.skops"))
    old = load_classifier(str(tmp_path / "v1.skops"), "fp-a")
    assert old.scale == 1.0
    assert old.predict(test)[0] == [classifier.class_names[i] for i in classifier.model.predict(test)]
    skops.io.dump({**state, "version": VERSION, "scale": -1.0}, str(tmp_path / "bad.skops"))
    with pytest.raises(UserError, match="feature scale -1.0"):
        load_classifier(str(tmp_path / "bad.skops"), "fp-a")


# ---------------------------------------------------------------------------------------------- CLI


def _classifier(*args):
    return subprocess.run([sys.executable, "-m", "tfface.classifier", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two tiny exported models (random weights, different seeds) of 32x32 faces."""
    import keras

    from tfface.export import export_saved_model
    from tfface.models import build_embedder

    root = tmp_path_factory.mktemp("exports")
    paths = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        embedder = build_embedder("mobilefacenet", (32, 32), 16)
        paths.append(export_saved_model(embedder, str(root), f"m{seed}", 1))
    return paths


@pytest.fixture(scope="module")
def people(orl_dir, tmp_path_factory):
    """Photos of 3 ORL people (5 train / 5 test each), an empty identity folder and a corrupt photo."""
    root = tmp_path_factory.mktemp("people")
    for split, numbers in (("train", range(1, 6)), ("test", range(6, 11))):
        for person in ("s21", "s22", "s23"):
            os.makedirs(root / split / person)
            for n in numbers:
                shutil.copy(os.path.join(orl_dir, person, f"{n}.pgm"), root / split / person / f"{n}.pgm")
        os.makedirs(root / split / "nobody")
    (root / "test" / "s23" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_cli_train_then_classify_real_photos(exports, people, tmp_path):
    path = tmp_path / "out" / "people.skops"
    train = _classifier("TRAIN", people / "train", exports[0], path, "--min_nrof_images_per_class=1", "--batch_size=4")
    assert train.returncode == 0, train.stderr
    assert "Skipped 1 classes" in train.stdout  # the empty folder, skipped and counted
    state = skops.io.load(str(path), trusted=["sklearn.svm._classes.SVC"])
    assert state["class_names"] == ["s21", "s22", "s23"] and state["fingerprint"]
    classify = _classifier("CLASSIFY", people / "test", exports[0], path, "--min_nrof_images_per_class=1")
    assert classify.returncode == 0, classify.stderr
    lines = [line for line in classify.stdout.splitlines() if line[:4].strip().isdigit()]
    assert len(lines) == 15  # the corrupt photo is skipped, not classified
    assert "broken.jpg" in classify.stdout
    accuracy = float(classify.stdout.split("Accuracy: ")[1].split()[0])
    names = [line.split()[1].rstrip(":") for line in lines]
    assert accuracy == pytest.approx(np.mean([n == f"s{21 + i // 5}" for i, n in enumerate(names)]), abs=1e-3)
    assert accuracy >= 0.6  # a random-weight model's embeddings lie close together: 0.33 without the feature scale

    refused = _classifier("CLASSIFY", people / "test", exports[1], path, "--min_nrof_images_per_class=1")
    assert refused.returncode == 2 and "another model" in refused.stderr and "Traceback" not in refused.stderr


def test_cli_user_errors(exports, people, tmp_path):
    pickled = tmp_path / "old.pkl"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    cases = [
        (("CLASSIFY", people / "test", exports[0], pickled, "--min_nrof_images_per_class=1"), "pickles are never"),
        (("TRAIN", people / "train", exports[0], tmp_path / "c.skops"), "min_nrof_images_per_class=20"),
        (("TRAIN", people / "train", exports[0], tmp_path / "c.skops", "--min_nrof_images_per_class=1", "--align"),
         "cannot find and align faces in photos"),
        (("GUESS", people / "train", exports[0], tmp_path / "c.skops"), "usage"),
    ]
    for args, message in cases:
        proc = _classifier(*args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "c.skops")
