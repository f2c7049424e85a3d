import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.evaluation import distance, evaluate, get_paths, read_pairs


def _reference(emb, issame, folds=10, metric=0, far_target=1e-3):
    """Independent, loop-based restatement of facenet's lfw.evaluate (no sklearn/scipy)."""
    a, b = emb[0::2].astype(np.float64), emb[1::2].astype(np.float64)
    if metric == 0:
        dist = ((a - b) ** 2).sum(1)
    else:
        cos = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        dist = np.arccos(np.clip(cos, -1, 1)) / np.pi
    n = len(issame)
    sizes = [n // folds + (1 if i < n % folds else 0) for i in range(folds)]
    bounds = np.cumsum([0] + sizes)
    acc, val = [], []
    for f in range(folds):
        test = np.zeros(n, bool)
        test[bounds[f]:bounds[f + 1]] = True
        train = ~test
        best_t, best_acc = None, -1
        for t in np.arange(0, 4, 0.01):
            pred = dist[train] < t
            accuracy = np.mean(pred == issame[train])
            if accuracy > best_acc:
                best_t, best_acc = t, accuracy
        acc.append(np.mean((dist[test] < best_t) == issame[test]))
        fars = [np.mean(dist[train][~issame[train]] < t) for t in np.arange(0, 4, 0.001)]
        if max(fars) < far_target:
            threshold = 0.0
        else:
            pts = sorted({(far, t) for far, t in zip(fars, np.arange(0, 4, 0.001))}, key=lambda p: (p[0], p[1]))
            firsts = {}
            for far, t in pts:
                firsts.setdefault(far, t)
            xs = sorted(firsts)
            threshold = np.interp(far_target, xs, [firsts[x] for x in xs])
        val.append(np.mean(dist[test][issame[test]] < threshold))
    return np.array(acc), np.mean(val)


def _pairs(n, noise, rng, dim=16):
    issame = rng.random(n) < 0.5
    base = rng.normal(size=(n, dim))
    other = np.where(issame[:, None], base, rng.normal(size=(n, dim)))
    emb = np.empty((2 * n, dim))
    emb[0::2], emb[1::2] = base, other + noise * rng.normal(size=(n, dim))
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), issame


@pytest.mark.parametrize("metric", [0, 1])
def test_matches_independent_reference(metric):
    emb, issame = _pairs(203, 0.9, np.random.default_rng(metric))
    result = evaluate(emb, issame, distance_metric=metric)
    accuracy, val = _reference(emb, issame, metric=metric)
    np.testing.assert_allclose(result.accuracy, accuracy)
    assert result.val == pytest.approx(val)
    assert 0.6 < result.accuracy.mean() < 0.99
    assert 0.5 < result.auc <= 1.0 and 0.0 < result.eer < 0.5
    assert result.tpr.shape == result.fpr.shape == (400,)


def test_roc_covers_flip_concatenated_embeddings():
    """facenet's use_flipped_images rows are two unit vectors side by side (squared distances up
    to 8): the ROC must still run from (0, 0) to (1, 1), with the AUC of sklearn's exact ROC."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    emb, issame = _pairs(400, 1.2, rng)
    flipped = emb + 0.3 * rng.normal(size=emb.shape)
    concatenated = np.concatenate([emb, flipped / np.linalg.norm(flipped, axis=1, keepdims=True)], axis=1)
    dist = distance(concatenated[0::2], concatenated[1::2])
    assert dist.max() > 4.0  # beyond facenet's grid
    result = evaluate(concatenated, issame)
    assert result.roc_thresholds[-1] > dist.max() and result.roc_thresholds[1] == pytest.approx(0.01)
    assert (result.fpr[0], result.tpr[0], result.fpr[-1], result.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert result.auc == pytest.approx(roc_auc_score(issame, -dist), abs=0.01)
    assert np.isfinite(result.eer) and 0.0 < result.eer < 0.5
    within = evaluate(emb, issame)  # unit vectors: facenet's own grid
    assert within.roc_thresholds.size == 400


def test_perfect_and_random_embeddings():
    rng = np.random.default_rng(5)
    emb, issame = _pairs(300, 0.0, rng)
    perfect = evaluate(emb, issame)
    assert perfect.accuracy.mean() == 1.0 and perfect.auc == pytest.approx(1.0)
    random = evaluate(rng.normal(size=(600, 8)), issame)
    assert 0.35 < random.accuracy.mean() < 0.65
    lines = perfect.summary_lines()
    assert lines[0] == "Accuracy: 1.00000+-0.00000" and lines[1].startswith("Validation rate: ")
    assert lines[2].startswith("Area Under Curve (AUC): ") and lines[3].startswith("Equal Error Rate (EER): ")


def test_subtract_mean_changes_only_centring():
    emb, issame = _pairs(100, 0.8, np.random.default_rng(2))
    shifted = emb + 3.0  # a constant offset is removed exactly by subtract_mean
    np.testing.assert_allclose(
        evaluate(shifted, issame, subtract_mean=True).accuracy, evaluate(emb, issame, subtract_mean=True).accuracy
    )


def test_distances():
    a, b = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[0.0, 1.0], [0.0, 5.0]])
    np.testing.assert_allclose(distance(a, b, 0), [2.0, 9.0])
    np.testing.assert_allclose(distance(a, b, 1), [0.5, 0.0], atol=1e-7)
    with pytest.raises(UserError, match="distance_metric"):
        distance(a, b, 2)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(2N, D\)"):
        evaluate(np.zeros((5, 3)), np.zeros(3, bool))


def test_pairs_file_and_missing_images(tmp_path):
    for name, count in (("Ann_B", 2), ("Carl_D", 1)):
        (tmp_path / name).mkdir()
        for k in range(1, count + 1):
            (tmp_path / name / f"{name}_{k:04d}.png").write_bytes(b"x")
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("1\t1\nAnn_B\t1\t2\nAnn_B\t2\tCarl_D\t1\n")
    paths, issame = get_paths(str(tmp_path), read_pairs(str(pairs_file)))
    assert paths[0].endswith("Ann_B/Ann_B_0001.png") and paths[3].endswith("Carl_D/Carl_D_0001.png")
    assert issame.tolist() == [True, False]
    pairs_file.write_text("1\t1\nAnn_B\t1\t3\n")
    with pytest.raises(UserError, match="1 image\\(s\\) named in the pairs file are missing.*Ann_B_0003"):
        get_paths(str(tmp_path), read_pairs(str(pairs_file)))
    pairs_file.write_text("Ann_B\t1\t3\n")
    with pytest.raises(UserError, match="header line"):
        read_pairs(str(pairs_file))
    with pytest.raises(UserError, match="does not exist"):
        read_pairs(str(tmp_path / "nope.txt"))
