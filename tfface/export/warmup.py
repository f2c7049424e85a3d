"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays these ``PredictionLog`` records (``tensorflow-serving-api`` protos) when it
loads a version, before it reports the version available, so the first user request does not pay
for graph initialisation and kernel compilation (oneDNN compiles per input shape: one request per
signature and batch size in :data:`BATCH_SIZES`).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
BATCH_SIZES = (1, 8)


def write_requests(path: str, requests: list[tuple[str, dict[str, np.ndarray]]]) -> int:
    """Writes one ``PredictionLog`` per (signature name, inputs) to the TFRecord ``path``; returns the count."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(requests)


def read_requests(path: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The (signature name, inputs) of every warm-up record of ``path`` (or of a version dir)."""
    if os.path.isdir(path):
        path = os.path.join(path, WARMUP_FILE)
    requests = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        requests.append((request.model_spec.signature_name or "serving_default", inputs))
    return requests
