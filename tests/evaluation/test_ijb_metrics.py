"""IJB metrics and template pooling against independent references: scikit-learn's roc_curve with
the nearest-FAR rule, brute-force loops over probes and over templates."""
import numpy as np
import pytest
from sklearn.metrics import roc_curve

from tfface.evaluation.ijb_metrics import FARS, identification, pair_scores, roc, tar_at_far
from tfface.evaluation.ijb_templates import Variant, image_features, template_features, variants


def _scores(rng, size, genuine_rate, decimals):
    labels = rng.random(size) < genuine_rate
    scores = rng.normal(size=size) + 2.5 * labels
    return (np.round(scores, decimals) if decimals is not None else scores), labels


@pytest.mark.parametrize("decimals", [None, 1, 3])
def test_tar_at_far_equals_sklearn_roc_with_the_nearest_far_rule(decimals):
    rng = np.random.default_rng(decimals or 0)
    scores, labels = _scores(rng, 300_000, 0.002, decimals)  # ties when rounded
    fpr, tpr, thresholds = roc_curve(labels, scores)  # the reference reads drop_intermediate=True (default)
    ours, _ = tar_at_far(scores, labels, FARS)
    for k, far in enumerate(FARS):
        nearest = min(zip(np.abs(fpr - far), range(len(fpr))))[1]  # the reference's rule, first index on ties
        assert abs(ours.nearest_tar[k] - tpr[nearest]) <= 1e-9 and abs(ours.nearest_far[k] - fpr[nearest]) <= 1e-9
    full_fpr, full_tpr, full_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    for k, far in enumerate(FARS):
        at_or_below = full_fpr <= far
        best = np.flatnonzero(at_or_below)[np.argmax(full_tpr[at_or_below])]
        assert abs(ours.strict_tar[k] - full_tpr[best]) <= 1e-9 and ours.strict_far[k] <= far
        assert ours.strict_threshold[k] == full_thresholds[best]
        accepted = scores >= ours.strict_threshold[k]
        assert abs(accepted[~labels].mean() - ours.strict_far[k]) <= 1e-12
        assert abs(accepted[labels].mean() - ours.strict_tar[k]) <= 1e-12
    ours_roc = roc(scores, labels, drop_intermediate=True)
    assert ours_roc.fpr.shape == fpr.shape and np.abs(ours_roc.fpr - fpr).max() <= 1e-12
    assert np.abs(ours_roc.tpr - tpr).max() <= 1e-12 and np.array_equal(ours_roc.thresholds, thresholds)


def test_the_two_rules_differ_where_the_nearest_point_lies_above_the_target():
    # ROC corners: (0.1, 0) impostor 0.9; (0.1, 0.5) five genuine; (0.2, 0.6) a genuine and an impostor
    # tied at 0.45; (0.2, 1.0) four genuine; then eight low impostors
    scores = np.r_[0.9, 0.45, np.linspace(0.0, 0.1, 8), np.linspace(0.5, 0.8, 5), 0.45, np.linspace(0.3, 0.4, 4)]
    labels = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    ours, _ = tar_at_far(scores, labels, (0.12, 0.19))
    # nearest: the first point at FAR 0.1 is (0.1, 0); at 0.19 the point (0.2, 0.6) above the target
    assert ours.nearest_far.tolist() == pytest.approx([0.1, 0.2])
    assert ours.nearest_tar.tolist() == pytest.approx([0.0, 0.6])
    assert ours.strict_far.tolist() == pytest.approx([0.1, 0.1])
    assert ours.strict_tar.tolist() == pytest.approx([0.5, 0.5])
    assert ours.strict_threshold.tolist() == pytest.approx([0.5, 0.5])


def test_pair_scores_equal_gathered_dot_products():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(500, 24))
    first, second = rng.integers(0, 500, 20_000), rng.integers(0, 500, 20_000)
    expected = np.einsum("ij,ij->i", features[first], features[second])
    assert np.abs(pair_scores(features, first, second, block=37) - expected).max() <= 1e-12


def _brute_identification(probes, probe_ids, gallery, gallery_ids, ranks, fpirs):
    """The reference protocol's loop, probe by probe."""
    hits, positives, negatives, non_mated = np.zeros(len(ranks)), [], [], []
    for feature, subject in zip(probes, probe_ids):
        similarity = gallery @ feature
        if subject in gallery_ids:
            label = np.argwhere(gallery_ids == subject)[0, 0]
            order = np.argsort(similarity)[::-1]
            hits += [label in order[:k] for k in ranks]
            positives.append(similarity[label])
            negatives.append(similarity[gallery_ids != subject].max())
        else:
            non_mated.append(similarity.max())
    positives, negatives = np.array(positives), np.array(negatives)
    ordered = np.sort(non_mated)[::-1]
    tpir = []
    for fpir in fpirs:
        threshold = ordered[max(int(len(ordered) * fpir) - 1, 0)]
        tpir.append(np.sum((positives > negatives) & (positives > threshold)) / len(positives))
    return hits / len(positives), np.array(tpir)


def test_cmc_and_tpir_equal_a_brute_force_loop():
    rng = np.random.default_rng(2)
    subjects = rng.permutation(400)[:150]
    gallery_ids = subjects
    centres = rng.normal(size=(400, 32))
    gallery = centres[gallery_ids] + rng.normal(0, 1.0, (150, 32))
    probe_ids = rng.integers(0, 400, 900)  # mated and non-mated
    probes = centres[probe_ids] + rng.normal(0, 1.0, (900, 32))
    ours = identification(probes, probe_ids, gallery, gallery_ids, (1, 5, 10), (0.01, 0.1), chunk=128)
    cmc, tpir = _brute_identification(probes, probe_ids, gallery, gallery_ids, (1, 5, 10), (0.01, 0.1))
    assert np.abs(ours.cmc - cmc).max() <= 1e-12 and np.abs(ours.tpir - tpir).max() <= 1e-12
    assert ours.mated == np.isin(probe_ids, gallery_ids).sum() and 0 < ours.cmc[0] < ours.cmc[2] < 1


def _brute_template(embeddings, mirrored, scores, templates, medias, variant):
    """Per template, per media, as the reference loops (float64)."""
    out = {}
    for template in np.unique(templates):
        media_features = []
        rows = np.flatnonzero(templates == template)
        for media in np.unique(medias[rows]):
            features = []
            for i in rows[medias[rows] == media]:
                f = embeddings[i].astype(np.float64) + (mirrored[i] if variant.flip else 0)
                f = f if variant.norm else f / np.linalg.norm(f)
                features.append(f * (scores[i] if variant.detector else 1.0))
            media_features.append(np.mean(features, axis=0))
        total = np.sum(media_features, axis=0)
        out[template] = total / np.linalg.norm(total)
    return out


def test_template_pooling_and_every_variant_equal_a_per_template_loop():
    rng = np.random.default_rng(3)
    embeddings, mirrored = rng.normal(size=(700, 16)).astype(np.float32), rng.normal(size=(700, 16)).astype(np.float32)
    scores = rng.uniform(0.3, 1.0, 700)
    templates = rng.choice(np.arange(5, 500, 7), 700)
    medias = rng.integers(0, 4, 700) + 10 * templates  # a template's medias; some single-photo medias
    assert len(variants()) == 8 and len(variants(flip=False)) == 4
    for variant in variants():
        ids, features = template_features(image_features(embeddings, mirrored, scores, variant), templates, medias)
        expected = _brute_template(embeddings, mirrored, scores, templates, medias, variant)
        assert list(ids) == sorted(expected)
        assert np.abs(features - np.stack([expected[t] for t in ids])).max() <= 1e-6
    plain = template_features(image_features(embeddings, None, scores, Variant(False, False, False)), templates, medias)
    normed = template_features(image_features(embeddings, None, scores, Variant(True, False, False)), templates, medias)
    assert np.abs(plain[1] - normed[1]).max() > 1e-3  # N matters for un-normalised embeddings
