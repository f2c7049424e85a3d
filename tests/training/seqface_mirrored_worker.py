"""SeqFace training steps over 2 mirrored logical CPUs, checked against NumPy; prints a JSON summary.

A fresh process: logical devices can only be configured before TensorFlow starts.
Usage: ``python seqface_mirrored_worker.py LABELLED_DIR SEQUENCE_DIR RUN_DIR``.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfface.training import configure_cpu_devices  # noqa: E402

configure_cpu_devices(2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.training import TrainConfig  # noqa: E402
from tfface.training.seqface import SeqFaceOptions, SeqFaceTrainer  # noqa: E402

CHECKED_STEPS, STEPS = 4, 30


def local(value) -> list[np.ndarray]:
    return [t.numpy() for t in trainer.strategy.experimental_local_results(value)]


labelled, sequence_dir, run_dir = sys.argv[1:4]
trainer = SeqFaceTrainer(
    TrainConfig(data_dir=labelled, run_dir=run_dir, model_def="sphereface20", image_size=(32, 32), embedding_size=16,
                batch_size=16, epoch_size=STEPS, max_nrof_epochs=1, head_kwargs={"scale": 16.0, "margin": 0.2},
                optimizer="MOM", learning_rate=0.01, strategy="mirrored"),
    SeqFaceOptions(sequence_dir, sequence_ratio=0.5, frames_per_sequence=2, dsa_loss_weight=0.04, dsa_agent_rate=0.5,
                   dsa_dropout_ratio=0.0, dsa_center_iter=1, dsa_diff_iter=2),
)
strategy, dsa = trainer.strategy, trainer.dsa
step = trainer._replica_step()  # noqa: SLF001  (the real step)
run = tf.function(lambda *batch: strategy.reduce("SUM", strategy.run(step, args=batch), axis=None))
batches = iter(trainer._dataset(0, 0))  # noqa: SLF001
summary = {"replicas": strategy.num_replicas_in_sync, "agent_error": 0.0, "replica_differences": [], "losses": []}
for k in range(STEPS):
    batch = next(batches)
    images, labels, sequence_ids = (local(part) for part in batch)
    if k < CHECKED_STEPS:  # each replica's embeddings and the agents before the step
        xs = [trainer.embedder(tf.constant(x), training=True).numpy().astype(np.float64) for x in images]
        agents = local(dsa.agents.value)[0].astype(np.float64)
    summary["losses"].append(float(run(*batch)[0]))
    after = local(dsa.agents.value)
    weights = [local(v.value) for v in trainer.embedder.trainable_variables + trainer.head.trainable_variables]
    summary["replica_differences"].append(max(
        [float(np.max(np.abs(after[0] - after[1])))] + [float(np.max(np.abs(w[0] - w[1]))) for w in weights]))
    if k < CHECKED_STEPS:  # c_j -= rate * sum_i (c_j - x_i) / (1 + n_j), per replica, summed over replicas
        moved = agents.copy()
        for x, y, s in zip(xs, labels, sequence_ids):
            own = np.where(s >= 0, trainer.num_classes + s, y)
            for j in np.unique(own):
                moved[j] -= dsa.agent_rate * np.sum(agents[j] - x[own == j], axis=0) / (1 + np.sum(own == j))
        summary["agent_error"] = max(summary["agent_error"], float(np.max(np.abs(after[0] - moved))))
summary["iteration"] = [int(v) for v in local(dsa.iteration.value)]
print(json.dumps(summary))
