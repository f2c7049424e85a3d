"""Does the feature norm of an AdaFace model rank image quality? AdaFace against ArcFace on
synthetic faces with graded degradation, same data, model and schedule.

Training faces: synthetic identities (:mod:`tfface.data.synthetic`), each image degraded by
blur, noise or an occluder at a random level 0 (none) .. 3 (:func:`tfface.data.synthetic.degrade`),
shrunk to ``--size`` px. A small CNN is trained with each head for ``--steps`` Adam steps. On
held-out identities (never trained on) it measures:

* the Spearman correlation between the feature norm (the export's ``quality`` output) and the
  image quality, i.e. minus the degradation level, over all held-out images (the issue's target:
  >= 0.5 for AdaFace), per degradation kind, and within each identity (averaged);
* verification on the most degraded pairs (level 3 against level 3): ROC AUC and best accuracy
  over all same-identity pairs and as many different-identity pairs.

    python bench/quality_heads.py                      # the full measurement (~10 min on 2 cores)
    python bench/quality_heads.py --steps 1000 --train_ids 100 --images_per_id 20 --test_ids 20  # CI, short

Prints a table and writes ``bench/results/quality_heads_<UTC time>.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import cv2
import keras
import numpy as np
import tensorflow as tf
from scipy import stats

from tfface import heads
from tfface.data import synthetic

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
HEADS = {"adaface": {"scale": 64.0, "margin": 0.4, "h": 0.333, "t_alpha": 0.01},
         "arcface": {"scale": 64.0, "margin": 0.5}}


@dataclasses.dataclass
class Config:
    train_ids: int = 120
    images_per_id: int = 40
    test_ids: int = 40
    test_images_per_level: int = 6
    size: int = 32
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    embedding_size: int = 64
    seed: int = 0


def faces(identities: range, count: int, size: int, seed: int, levels=None) -> tuple[np.ndarray, ...]:
    """``count`` images per identity (levels drawn uniformly, or ``count`` per level of ``levels``),
    each degraded by a random kind then shrunk to ``size`` px: uint8 RGB (N, size, size, 3),
    labels (N,), levels (N,), kinds (N,)."""
    rng = np.random.default_rng(seed)
    images, labels, grades, kinds = [], [], [], []
    for i in identities:
        identity = synthetic.sample_identity(np.random.default_rng([seed, i]))
        wanted = [lv for lv in levels for _ in range(count)] if levels is not None else rng.integers(0, 4, count)
        for level in wanted:
            kind = rng.choice(synthetic.DEGRADATIONS)
            image = synthetic.degrade(synthetic.render(identity, rng), kind, int(level), rng)
            images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1])
            labels.append(i - identities.start)
            grades.append(int(level))
            kinds.append(kind)
    return np.stack(images), np.array(labels, np.int32), np.array(grades), np.array(kinds)


def backbone(size: int, embedding_size: int) -> keras.Model:
    """A small CNN ending in a linear layer (no batch normalisation of the features: it would
    squeeze the norms that the score is read from; measured: Spearman 0.33 with, 0.42 without,
    at 400 steps)."""
    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 127.5, -1.0)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D()(layers.ReLU()(layers.BatchNormalization()(x)))
    x = layers.Dense(embedding_size, use_bias=False)(layers.Flatten()(x))
    return keras.Model(inputs, x)


def train(head_name: str, images: np.ndarray, labels: np.ndarray, config: Config) -> keras.Model:
    keras.utils.set_random_seed(config.seed)
    model = backbone(config.size, config.embedding_size)
    head = heads.get_head(head_name, int(labels.max()) + 1, **HEADS[head_name])
    head.build([(None, config.embedding_size), (None,)])
    variables = model.trainable_variables + head.trainable_variables
    decay = keras.optimizers.schedules.PiecewiseConstantDecay(  # x0.1 for the last quarter
        [int(0.75 * config.steps)], [config.learning_rate, 0.1 * config.learning_rate])
    optimizer = keras.optimizers.Adam(decay)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            embeddings = model(tf.image.random_flip_left_right(x), training=True)
            loss = tf.reduce_mean(heads.head_loss(y, head([embeddings, y], training=True)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(config.seed)
    x = images.astype(np.float32)
    for _ in range(config.steps):
        batch = rng.integers(0, len(x), config.batch_size)
        step(x[batch], labels[batch])
    return model


def verification(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """ROC AUC and best accuracy of the cosine over every same-identity pair and as many others."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    rng = np.random.default_rng(seed)
    keep = np.concatenate([np.flatnonzero(same), rng.choice(np.flatnonzero(~same), same.sum(), replace=False)])
    scores, truth = np.sum(unit[i[keep]] * unit[j[keep]], axis=1), same[keep]
    auc = float(stats.mannwhitneyu(scores[truth], scores[~truth]).statistic / (truth.sum() * (~truth).sum()))
    best = max(float(np.mean((scores > t) == truth)) for t in np.unique(scores))
    return {"pairs": int(len(keep)), "auc": round(auc, 4), "best_accuracy": round(best, 4)}


def measure(model: keras.Model, images: np.ndarray, labels: np.ndarray, levels: np.ndarray, kinds: np.ndarray,
            seed: int) -> dict:
    embeddings = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
    norms = np.linalg.norm(embeddings, axis=1)
    worst = levels == synthetic.MAX_LEVEL

    def spearman(rows):
        return round(float(stats.spearmanr(norms[rows], -levels[rows]).statistic), 4)

    return {
        "spearman_norm_vs_quality": spearman(slice(None)),
        "spearman_per_kind": {kind: spearman((kinds == kind) | (levels == 0)) for kind in synthetic.DEGRADATIONS},
        "spearman_within_identity": round(float(np.mean([spearman(labels == i) for i in np.unique(labels)])), 4),
        "mean_norm_per_level": [round(float(norms[levels == lv].mean()), 3) for lv in range(synthetic.MAX_LEVEL + 1)],
        "most_degraded_verification": verification(embeddings[worst], labels[worst], seed),
        "clean_verification": verification(embeddings[levels == 0], labels[levels == 0], seed),
    }


def run(config: Config, head_names=tuple(HEADS)) -> dict:
    """Trains every head on the same data and measures each; returns {head: measurements}."""
    train_set = faces(range(0, config.train_ids), config.images_per_id, config.size, config.seed)
    test_ids = range(100_000, 100_000 + config.test_ids)  # identities never trained on
    test_set = faces(test_ids, config.test_images_per_level, config.size, config.seed + 1, levels=range(4))
    results = {}
    for name in head_names:
        start = time.time()
        model = train(name, *train_set[:2], config)
        results[name] = {**measure(model, *test_set, config.seed), "train_seconds": round(time.time() - start, 1)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for field in dataclasses.fields(Config):
        parser.add_argument(f"--{field.name}", type=field.type if callable(field.type) else type(field.default),
                            default=field.default)
    config = Config(**{k: v for k, v in vars(parser.parse_args()).items()})
    results = run(config)
    print("| head | Spearman(norm, quality) | mean norm, level 0..3 | level-3 pairs AUC / acc | clean pairs AUC / acc |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        worst, clean = r["most_degraded_verification"], r["clean_verification"]
        print(f"| {name} | {r['spearman_norm_vs_quality']:.3f} | {r['mean_norm_per_level']} | "
              f"{worst['auc']:.3f} / {worst['best_accuracy']:.3f} | {clean['auc']:.3f} / {clean['best_accuracy']:.3f} |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"quality_heads_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as f:
        json.dump({"config": dataclasses.asdict(config), "results": results}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
