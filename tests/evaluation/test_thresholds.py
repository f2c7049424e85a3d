import json

import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.evaluation import evaluate
from tfface.evaluation.thresholds import Threshold, calibrate, load_threshold, save_threshold


def test_calibrate_against_numpy_and_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    issame = rng.random(200) < 0.5
    a = rng.normal(size=(200, 8))
    b = np.where(issame[:, None], a + 0.6 * rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
    emb = np.empty((400, 8))
    emb[0::2], emb[1::2] = a, b
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    result = evaluate(emb, issame)
    threshold = calibrate(result, 0, "synthetic", "abc")
    dist = ((emb[0::2] - emb[1::2]) ** 2).sum(1)
    assert threshold.value == pytest.approx(np.mean(result.thresholds))
    assert threshold.tar == pytest.approx(np.mean(dist[issame] <= threshold.value))
    assert threshold.far == pytest.approx(np.mean(dist[~issame] <= threshold.value))
    assert 0.5 < threshold.tar and threshold.far < 0.5 and threshold.num_pairs == 200
    path = save_threshold(threshold, str(tmp_path))
    assert json.load(open(path))["value"] == threshold.value
    assert load_threshold(str(tmp_path), "abc") == threshold
    assert load_threshold(str(tmp_path)) == threshold
    np.testing.assert_array_equal(threshold.is_same(dist), dist <= threshold.value)


def test_refuses_another_model_and_malformed_files(tmp_path):
    assert load_threshold(str(tmp_path)) is None
    save_threshold(Threshold(1, 0.4, 0.01, 0.9, "lfw.bin", 6000, "abc"), str(tmp_path))
    with pytest.raises(UserError, match="calibrated on another model .*'abc'.*'xyz'"):
        load_threshold(str(tmp_path), "xyz")
    (tmp_path / "threshold.json").write_text('{"value": 1.0}')
    with pytest.raises(UserError, match="is not a threshold file"):
        load_threshold(str(tmp_path))
    (tmp_path / "threshold.json").write_text(json.dumps({**Threshold(3, 1, 0, 0, "", 1, "").__dict__}))
    with pytest.raises(UserError, match="distance_metric 3"):
        load_threshold(str(tmp_path))
