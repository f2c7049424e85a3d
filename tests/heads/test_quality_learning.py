"""The learning check, short: after a short CPU schedule on synthetic faces with graded blur,
noise and occlusion, an AdaFace model's feature norm ranks image quality on held-out identities.
The full measurement, AdaFace next to ArcFace, is ``bench/quality_heads.py``."""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location("quality_heads", os.path.join(ROOT, "bench", "quality_heads.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_adaface_norm_ranks_image_quality():
    bench = _bench()
    config = bench.Config(train_ids=100, images_per_id=20, test_ids=20, steps=1000)  # measured: 0.52
    result = bench.run(config, head_names=("adaface",))["adaface"]
    print(f"\nAdaFace, short schedule: {result}")
    # The target (>= 0.5) is met by the full schedule of bench/quality_heads.py (0.577); this
    # short schedule measured 0.52, so CI asserts a margin below it (an untrained norm gives ~0).
    assert result["spearman_norm_vs_quality"] >= 0.4, result
    assert np.all(np.diff(result["mean_norm_per_level"]) < 0)  # mean norm falls with every degradation level
    assert result["clean_verification"]["auc"] > 0.8  # it did learn identities, not only quality
