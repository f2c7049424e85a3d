"""The search layer under the facebank (tfface.search) and the facebank's segment files at scale:
exact search against NumPy, recall of the approximate index, O(person) changes, crash safety,
refused files, and the Milvus backend on milvus-lite."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.recognition.facebank import META_FILE, UNKNOWN, FaceBank, pair_distances
from tfface.search import faiss_index, synthetic
from tfface.search.faiss_index import FaissIndex

DIM = 64


@pytest.fixture
def approximate(monkeypatch):
    """Banks of 2,000 people and more get the approximate index (50k in production)."""
    monkeypatch.setattr(faiss_index, "EXACT_LIMIT", 2_000)
    monkeypatch.setattr("tfface.recognition.facebank.SNAPSHOT_MIN", 10)


@pytest.fixture(scope="module")
def gallery():
    templates = synthetic.gallery(6_000, DIM, seed=3, per_cluster=50)
    queries, truth = synthetic.queries(templates, 600, seed=4)
    return templates, queries, truth


def bank_of(templates, index=None):
    bank = FaceBank("model-a", index=index)
    bank.add_many([f"p{i}" for i in range(len(templates))], templates, np.ones(len(templates), np.int64))
    return bank


def tree(path):
    return {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in sorted(os.listdir(path))}


def test_exact_search_against_numpy():
    rng = np.random.default_rng(0)
    sums = rng.normal(size=(300, DIM)).astype(np.float32)
    counts = rng.integers(1, 5, 300)
    bank = FaceBank("fp", [f"p{i}" for i in range(300)], sums, counts)
    queries = rng.normal(size=(50, DIM))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    centres = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    for metric in (0, 1):
        reference = pair_distances(queries, centres, metric)
        order = np.argsort(reference, axis=1, kind="stable")[:, :5]
        names, distances = bank.search(queries, 5, metric)
        np.testing.assert_allclose(distances, np.take_along_axis(reference, order, 1), atol=1e-5)
        assert names == [[f"p{k}" for k in row] for row in order]
    assert bank.index_kind() == "faiss Flat"
    names, distances = FaceBank("fp", ["a"], sums[:1], [1]).search(queries[:2], 3)  # fewer people than k
    assert names == [["a", UNKNOWN, UNKNOWN]] * 2 and np.isinf(distances[:, 1:]).all()


def test_approximate_recall_and_changes_keep_the_others(gallery, approximate, tmp_path):
    templates, queries, truth = gallery
    bank = bank_of(templates)
    exact = pair_distances(queries, templates).argmin(axis=1)
    names, _ = bank.identify(queries)
    assert bank.index_kind().startswith("faiss IVF") and bank.index_kind().endswith(f",PQ{DIM // 4}x4fs")
    _, raw = bank.index.search(queries, 1)
    index_recall = np.mean(raw[:, 0] == exact)
    recall = np.mean([n == f"p{k}" for n, k in zip(names, exact)])
    print(f"\nrecall@1 vs exact: index {index_recall:.4f}, with exact re-ranking {recall:.4f}")
    assert recall >= 0.98 and index_recall >= 0.85  # 4-bit codes: the exact re-ranking does the rest

    bank.save(str(tmp_path))
    bank.remove_person("p17")
    bank.add_many(["newcomer", "p18"], templates[[40, 41]], [1, 1])  # p18: more photos, a new row
    bank.save(str(tmp_path))
    loaded = FaceBank.load(str(tmp_path))
    assert len(loaded) == len(templates) and "p17" not in loaded.names and loaded.names[-2:] == ["newcomer", "p18"]
    after, _ = loaded.identify(queries)
    changed = {"p17", "p18", "p40", "p41"}
    same = [a == b for a, b, t in zip(names, after, truth) if a not in changed and f"p{t}" not in changed]
    assert sum(same) >= 0.99 * len(same)
    with pytest.raises(UserError, match="'p17' is not in the facebank") as err:
        loaded.remove_person("p17")
    assert "\n" not in str(err.value)


def test_segments_are_o_person_and_old_banks_are_read(gallery, tmp_path):
    templates = gallery[0][:500]
    bank = bank_of(templates)
    bank.save(str(tmp_path))
    base = {f: os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path) if f.endswith(".npy")}
    for i in range(5):
        bank.add_many([f"extra{i}"], templates[i:i + 1], [1])
        bank.save(str(tmp_path))
    segments = json.loads((tmp_path / META_FILE).read_text())["segments"]
    assert segments[0]["rows"] == 500 and set(base) <= set(os.listdir(tmp_path))  # the big segment untouched
    assert len(segments) <= 3 and sum(s["rows"] for s in segments) == 505
    assert FaceBank.load(str(tmp_path)).names == bank.names

    import io

    old = tmp_path / "v1"  # a bank written by tfface's format 1
    old.mkdir()
    buffer = io.BytesIO()
    np.savez(buffer, sums=templates[:3], counts=np.array([1, 2, 3]))
    (old / "embeddings-x.npz").write_bytes(buffer.getvalue())
    (old / META_FILE).write_text(json.dumps({
        "format": "tfface-facebank", "version": 1, "fingerprint": "fp1", "names": ["a", "b", "c"],
        "counts": [1, 2, 3], "embedding_size": DIM, "embeddings_file": "embeddings-x.npz",
        "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}))
    v1 = FaceBank.load(str(old))
    assert v1.names == ["a", "b", "c"] and v1.counts == [1, 2, 3] and v1.fingerprint == "fp1"
    v1.save(str(old))
    assert "embeddings-x.npz" not in os.listdir(old) and FaceBank.load(str(old)).names == ["a", "b", "c"]


SAVER = textwrap.dedent("""
    import sys, numpy as np
    from tfface.recognition.facebank import FaceBank
    bank = FaceBank.load(sys.argv[1])
    rng = np.random.default_rng(0)
    for i in range(10_000):
        bank.add_many([f"n{i}"], rng.normal(size=(1, %d)), [1])
        if i %% 7 == 3:
            bank.remove_person(f"n{i - 2}")
        bank.save(sys.argv[1])
        print(i, flush=True)
""" % DIM)


def test_kill_mid_save_leaves_a_readable_bank(gallery, tmp_path):
    bank_of(gallery[0][:3000]).save(str(tmp_path))
    script = tmp_path.parent / f"{tmp_path.name}-saver.py"
    script.write_text(SAVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    saver = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, env=env)
    saver.stdout.readline()  # the first save finished: kill it somewhere in the following ones
    time.sleep(1.3)
    saver.send_signal(signal.SIGKILL)
    saver.wait()
    os.remove(script)
    loaded = FaceBank.load(str(tmp_path))
    assert loaded.names[:3000] == [f"p{i}" for i in range(3000)] and len(loaded) > 3000
    added = [int(n[1:]) for n in loaded.names[3000:]]
    assert added == sorted(added) and all(f"n{i - 2}" not in loaded.names for i in added if i % 7 == 3)
    loaded.save(str(tmp_path))  # what a killed save left behind is cleaned up
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f] and FaceBank.load(str(tmp_path)).names == loaded.names


def test_refused_index_files_leave_the_bank_untouched(gallery, approximate, tmp_path):
    templates = gallery[0]
    a, b = tmp_path / "a", tmp_path / "b"
    bank_of(templates[:3000]).save(str(a))
    other = bank_of(templates[:3000])
    other.fingerprint = "model-b"
    other.save(str(b))
    meta = json.loads((a / META_FILE).read_text())
    index_file = a / meta["faiss"]["file"]
    assert FaceBank.load(str(a)).index_kind().startswith("faiss IVF")

    foreign = b / json.loads((b / META_FILE).read_text())["faiss"]["file"]
    index_file.write_bytes(foreign.read_bytes())  # another model's index, with a matching checksum
    meta["faiss"]["sha256"] = hashlib.sha256(foreign.read_bytes()).hexdigest()
    (a / META_FILE).write_text(json.dumps(meta))
    before = tree(a)
    with pytest.raises(UserError, match="built for the model of fingerprint model-b.* reindex") as err:
        FaceBank.load(str(a))
    assert "\n" not in str(err.value) and tree(a) == before

    index_file.write_bytes(b"not a faiss index\n" + foreign.read_bytes()[100:])
    meta["faiss"]["sha256"] = hashlib.sha256(index_file.read_bytes()).hexdigest()
    (a / META_FILE).write_text(json.dumps(meta))
    before = tree(a)
    with pytest.raises(UserError, match="is not a tfface FAISS index"):
        FaceBank.load(str(a))
    assert tree(a) == before

    data = bytearray(foreign.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_file.write_bytes(bytes(data))  # corrupted: the checksum no longer matches
    with pytest.raises(UserError, match="changed after the bank was written"):
        FaceBank.load(str(a))
    rebuilt = FaceBank.load(str(a), rebuild_index=True)  # what `tfface-facebank reindex` does
    rebuilt.save(str(a))
    assert FaceBank.load(str(a)).identify(templates[:5])[0] == [f"p{i}" for i in range(5)]


def test_faiss_index_round_trip_and_refusals():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(100, DIM)).astype(np.float32)
    index = FaissIndex(DIM)
    index.rebuild(np.arange(100), vectors)
    data = index.to_bytes("fp")
    again = FaissIndex.from_bytes(data, "fp", DIM, "x.faiss")
    np.testing.assert_array_equal(again.search(vectors[:7], 3)[1], index.search(vectors[:7], 3)[1])
    with pytest.raises(UserError, match="'x.faiss' was built for the model of fingerprint fp, the facebank's is q"):
        FaissIndex.from_bytes(data, "q", DIM, "x.faiss")
    with pytest.raises(UserError, match="holds vectors of size 64, the facebank 32"):
        FaissIndex.from_bytes(data, "fp", 32, "x.faiss")


def test_unreachable_milvus_is_one_line():
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    bank = FaceBank("fp", ["a"], np.ones((1, DIM), np.float32), [1], index="milvus://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(UserError, match="--index milvus://127.0.0.1:9: cannot use Milvus") as err:
        bank.identify(np.ones((1, DIM), np.float32))
    assert "\n" not in str(err.value) and time.monotonic() - start < 60
    with pytest.raises(UserError, match="--index: expected 'faiss'"):
        FaceBank("fp", ["a"], np.ones((1, DIM), np.float32), [1], index="redis://x").identify(np.ones((1, DIM)))


@pytest.fixture(scope="session")
def milvus_lite(tmp_path_factory):
    """One milvus-lite database file for the session (its server starts with the first client)."""
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    pytest.importorskip("milvus_lite", reason="the milvus extra is not installed")
    return str(tmp_path_factory.mktemp("milvus") / "faces.db")


def test_milvus_lite_matches_faiss_exact(gallery, milvus_lite, tmp_path):
    templates, queries, _ = gallery
    faiss_bank, milvus_bank = bank_of(templates[:2000]), bank_of(templates[:2000], index=milvus_lite)
    expected, expected_d = faiss_bank.search(queries, 3)
    found, found_d = milvus_bank.search(queries, 3)
    assert [n[0] for n in found] == [n[0] for n in expected] and found == expected
    np.testing.assert_allclose(found_d, expected_d, atol=1e-5)

    milvus_bank.remove_person("p3")
    milvus_bank.add_many(["z"], templates[3:4], [1])
    milvus_bank.save(str(tmp_path))
    loaded = FaceBank.load(str(tmp_path))
    assert loaded.index_spec == milvus_lite and len(loaded.index) == 2000
    assert loaded.identify(templates[3:5])[0] == ["z", "p4"]
    other = bank_of(templates[:10], index=milvus_lite)  # another bank: its own collection
    other.fingerprint = "model-b"
    assert other.identify(templates[:1])[0] == ["p0"] and len(loaded.index) == 2000
    assert other.index.name != loaded.index.name and "model_b" in other.index.name
