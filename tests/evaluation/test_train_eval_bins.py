"""``train_softmax --eval_bins``: the after-epoch evaluator it hands the trainer."""
import numpy as np
import pytest
import tensorflow as tf

import tfface
from tfface.core.errors import UserError
from tfface.evaluation import bins
from tfface.evaluation.benchmarks import bins_evaluator, chain, evaluate_bin


def test_bins_evaluator_scores_the_keras_embedder(face_crops, face_pairs, tmp_path):
    pairs = face_pairs[:60]
    bins.write_bin(str(tmp_path / "faces.bin"), [face_crops[n] for a, b, _ in pairs for n in (a, b)], [s for *_, s in pairs])
    embedder = tfface.models.build_embedder("mobilefacenet", (32, 32), 16, "minus_one_to_one")
    evaluator = bins_evaluator(str(tmp_path), ["faces"], (32, 32), batch_size=50)
    lfw_like = lambda model, epoch: {"accuracy": 0.5}  # noqa: E731  (the --lfw_dir evaluator's place)
    metrics = chain(lfw_like, None, evaluator)(embedder, 0)

    def embed(x):
        return tf.math.l2_normalize(embedder(x.astype("float32"), training=False), 1).numpy()

    expected = evaluate_bin(embed, bins.load_bin(str(tmp_path / "faces.bin"), (32, 32)), flip=True).result
    assert metrics["accuracy"] == 0.5
    assert metrics["faces/accuracy"] == pytest.approx(np.mean(expected.accuracy))
    assert metrics["faces/auc"] == pytest.approx(expected.auc)
    assert chain(None, None) is None
    with pytest.raises(UserError, match="lfw.bin not found"):
        bins_evaluator(str(tmp_path), ["lfw"], (32, 32))
