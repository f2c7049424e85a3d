import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import tfface_align
from tfface.core import images
from tfface.core.errors import UserError
from tfface.recognition.facebank import META_FILE, UNKNOWN, FaceBank, model_threshold, pair_distances
from tfface.recognition.inference import load_embedder
from tests import facebank_model as fm


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_identities_and_identify_against_numpy():
    rng = np.random.default_rng(0)
    people = {name: unit(rng.normal(size=(n, 8))) for name, n in (("ann", 2), ("bob", 1), ("cid", 4))}
    bank = FaceBank("fp")
    for name, embeddings in people.items():
        bank._add(name, embeddings[:2])
    bank._add("cid", people["cid"][2:])  # more photos of a known person: same as adding all at once
    expected = np.stack([unit(e.mean(0)) for e in people.values()])
    np.testing.assert_allclose(bank.centres, expected, atol=1e-6)
    assert bank.names == ["ann", "bob", "cid"] and bank.counts == [2, 1, 4]

    queries = unit(rng.normal(size=(5, 8)))
    for metric in (0, 1):
        cos = np.clip(queries.astype(np.float64) @ expected.T, -1, 1)
        reference = np.sum((queries[:, None] - expected[None]) ** 2, -1) if metric == 0 else np.arccos(cos) / np.pi
        np.testing.assert_allclose(pair_distances(queries, expected, metric), reference, atol=1e-5)
        names, distances = bank.identify(queries, None, metric)
        np.testing.assert_allclose(distances, reference.min(1), atol=1e-5)
        assert names == [bank.names[k] for k in reference.argmin(1)]
        threshold = float(np.mean(np.sort(reference.min(1))[2:4]))  # between two distances
        names, _ = bank.identify(queries, threshold, metric)
        nearest, best = reference.argmin(1), reference.min(1)
        assert names == [bank.names[k] if d <= threshold else UNKNOWN for k, d in zip(nearest, best)]
        assert UNKNOWN in names and set(names) - {UNKNOWN}

    before = bank.centres[[0, 2]].copy()
    bank.remove_person("bob")
    assert bank.names == ["ann", "cid"] and bank.counts == [2, 4]
    np.testing.assert_array_equal(bank.centres, before)  # the others are not recomputed
    with pytest.raises(UserError, match="'bob' is not in the facebank"):
        bank.remove_person("bob")
    with pytest.raises(UserError, match="name"):
        FaceBank("fp").add_person(UNKNOWN, [], None)


def test_files_are_atomic_checked_and_pickle_free(tmp_path):
    rng = np.random.default_rng(1)
    bank = FaceBank("fp-a")
    bank._add("ann", unit(rng.normal(size=(2, 4))))
    bank._add("bob", unit(rng.normal(size=(3, 4))))
    bank.save(str(tmp_path))
    first = sorted(os.listdir(tmp_path))
    bank.remove_person("ann")
    bank.save(str(tmp_path))
    files = sorted(os.listdir(tmp_path))
    # the removal merged into the first segment: one people file, one sums file, no temporaries
    assert len(files) == 3 and META_FILE in files and files != first
    loaded = FaceBank.load(str(tmp_path))
    assert loaded.names == ["bob"] and loaded.counts == [3] and loaded.fingerprint == "fp-a"
    np.testing.assert_array_equal(loaded.sums, bank.sums)

    meta = json.loads((tmp_path / META_FILE).read_text())
    npy = tmp_path / meta["segments"][0]["sums"]
    data = bytearray(npy.read_bytes())
    data[-3] ^= 0xFF
    npy.write_bytes(bytes(data))
    with pytest.raises(UserError, match="changed after the bank was written"):
        FaceBank.load(str(tmp_path))

    # A pickled object array with a matching checksum is still refused (allow_pickle=False).
    import hashlib
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    npy.write_bytes(buffer.getvalue())
    meta["segments"][0]["sums_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="cannot read"):
        FaceBank.load(str(tmp_path))
    with pytest.raises(UserError, match="holds no facebank.json"):
        FaceBank.load(str(tmp_path / "nothing"))


@pytest.fixture(scope="module")
def model(orl_dir):
    return load_embedder(fm.orl_model(orl_dir))


def copy_people(orl_dir, dest, ids, photos):
    for i in ids:
        os.makedirs(dest / f"s{i}", exist_ok=True)
        for j in photos:
            shutil.copy(fm.orl_path(orl_dir, i, j), dest / f"s{i}" / f"{j}.pgm")
    return str(dest)


def test_recognises_enrolled_people_and_rejects_strangers(orl_dir, model, tmp_path):
    detector = tfface_align.MTCNN()
    photos = copy_people(orl_dir, tmp_path / "people", fm.BANK_IDS, fm.BANK_PHOTOS)
    (tmp_path / "people" / "s1" / "broken.jpg").write_bytes(b"not an image")
    bank, report = FaceBank.build(photos, model, detector)
    assert bank.names == sorted(f"s{i}" for i in fm.BANK_IDS) and bank.fingerprint == model.fingerprint
    assert [p for p, _ in report.skipped if p.endswith("broken.jpg")] and sum(report.used.values()) >= 45
    threshold, metric, source = model_threshold(model)
    assert source.endswith("threshold.json") and metric == 0

    from tfface.recognition.faces import embed_photos

    queries = [fm.orl_path(orl_dir, i, j) for i in fm.BANK_IDS for j in fm.QUERY_PHOTOS]
    truth = [f"s{i}" for i in fm.BANK_IDS for _ in fm.QUERY_PHOTOS]
    found = embed_photos(model, detector, queries)
    names, _ = bank.identify(found.embeddings, threshold, metric)
    right = sum(n == truth[i] for n, i in zip(names, found.used))
    wrong = sum(n not in (truth[i], UNKNOWN) for n, i in zip(names, found.used))
    strangers = [fm.orl_path(orl_dir, i, j) for i in fm.STRANGER_IDS for j in fm.STRANGER_PHOTOS]
    found_strangers = embed_photos(model, detector, strangers)
    stranger_names, _ = bank.identify(found_strangers.embeddings, threshold, metric)
    rejected = stranger_names.count(UNKNOWN)
    print(f"\nidentified {right}/{len(queries)} enrolled ({wrong} wrong names), "
          f"rejected {rejected}/{len(strangers)} strangers at threshold {threshold:.3f}")
    assert right >= 0.75 * len(queries) and wrong <= 3
    assert rejected >= 0.75 * len(strangers)

    # add / remove a person without touching the others
    before = bank.centres.copy()
    added = bank.add_person("s26", [fm.orl_path(orl_dir, 26, j) for j in (1, 2, 3)], model, detector)
    assert added.used == {"s26": 3} and bank.names[-1] == "s26"
    np.testing.assert_array_equal(bank.centres[:-1], before)
    names, _ = bank.identify(found_strangers.embeddings, threshold, metric)
    own = [n for n, i in zip(names, found_strangers.used) if strangers[i].split(os.sep)[-2] == "s26"]
    assert own.count("s26") >= 2  # enrolled: now recognised
    bank.remove_person("s26")
    np.testing.assert_array_equal(bank.centres, before)

    bank.save(str(tmp_path / "bank"))
    assert FaceBank.load(str(tmp_path / "bank"), model).names == bank.names
    foreign = FaceBank.load(str(tmp_path / "bank"))
    foreign.fingerprint = "another-model"
    foreign.save(str(tmp_path / "foreign"))
    with pytest.raises(UserError, match="built with the model of fingerprint another-model"):
        FaceBank.load(str(tmp_path / "foreign"), model)


def test_threshold_flag_and_missing_calibration(model, tmp_path):
    assert model_threshold(model, 0.5, 1) == (0.5, 1, "--threshold")
    bare = tmp_path / "bare"
    shutil.copytree(model.path, bare)
    os.remove(bare / "threshold.json")
    with pytest.raises(UserError, match="no calibrated threshold.json .* no --threshold"):
        model_threshold(load_embedder(str(bare)))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tfface.facebank", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_build_and_identify(orl_dir, model, tmp_path):
    bank = fm.people_bank(orl_dir)  # built with `python -m tfface.facebank build`
    loaded = FaceBank.load(bank, model)
    assert loaded.names == ["s1", "s2", "s3"] and loaded.counts == [5, 5, 5]
    photos = [fm.orl_path(orl_dir, 2, 1), fm.orl_path(orl_dir, 28, 1)]
    out = run_cli("identify", *photos, "--facebank", bank, "--model", model.path, "--annotate", str(tmp_path / "seen"),
                  "--top_k", "3")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith(orl_dir)]
    assert len(lines) == 2 and " s2 " in lines[0] and f" {UNKNOWN} " in lines[1], out.stdout
    for photo, name, colour in zip(photos, ("1.jpg", "1-2.jpg"), ((0, 200, 0), (0, 0, 255))):  # known green, Unknown red
        drawn = cv2.imread(str(tmp_path / "seen" / name))  # both photos are named 1.pgm
        assert drawn.shape[:2] == images.load(photo).shape[:2]
        assert (np.abs(drawn.astype(int) - colour).sum(axis=2) < 90).sum() > 100  # the box and label drawn
    others = [word.split(":")[0] for word in lines[0].split("]")[1].split()]
    assert sorted(others) == ["s1", "s3"], out.stdout  # the two other people, nearest first
    out = run_cli("remove", "nobody", "--facebank", bank)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 2 and errors == ["error: remove: 'nobody' is not in the facebank (known: s1, s2, s3)"]
