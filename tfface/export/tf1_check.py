"""Run an export the way TF Serving does, without a TF Serving binary.

TF Serving's C++ loader restores a SavedModel's variables with the MetaGraph's saver and then runs
a signature by the tensor names of its ``SignatureDef``; ``tf.compat.v1.saved_model.loader.load``
in a ``tf.compat.v1.Session`` does the same. :func:`check_in_fresh_process` replays the export's
warm-up requests that way in a new Python process (nothing of the exporting process, no Keras
object and no eager variable, can help it), and returns every request's outputs.

    python -m tfface.export.tf1_check EXPORT_VERSION_DIR OUTPUT.npz REQUESTS

(``REQUESTS``: a file of PredictionLog records, or the version directory for its warm-up file.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tfface.core.errors import UserError
from tfface.export import warmup


def run_requests_tf1(saved_model_dir: str, requests: list[tuple[str, dict[str, np.ndarray]]]) -> list[dict[str, np.ndarray]]:
    """Loads ``saved_model_dir`` with the TF1 loader (tag ``serve``) and runs each (signature, inputs)
    by its SignatureDef's tensor names; returns each request's outputs by output key."""
    results = []
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], saved_model_dir)
        for name, inputs in requests:
            signature = meta_graph.signature_def[name]
            feed = {signature.inputs[key].name: value for key, value in inputs.items()}
            fetch = {key: tensor.name for key, tensor in signature.outputs.items()}
            results.append(session.run(fetch, feed))
    return results


def check_in_fresh_process(saved_model_dir: str, requests: list[tuple[str, dict[str, np.ndarray]]] | None = None,
                           timeout: float = 600) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Runs ``requests`` (default: the export's warm-up requests) through the TF1 loader in a new process.

    Returns (signature name, outputs) per request, in the warm-up file's order.

    Raises:
        UserError: the process failed (its last error line is in the message).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "outputs.npz")
        source = saved_model_dir
        if requests is not None:
            source = os.path.join(tmp, "requests")
            warmup.write_requests(source, requests)
        proc = subprocess.run([sys.executable, "-m", "tfface.export.tf1_check", saved_model_dir, out, source],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            raise UserError(f"TF1 loader check of '{saved_model_dir}' failed: {lines[-1] if lines else proc.returncode}")
        with np.load(out, allow_pickle=False) as data:
            names = [str(n) for n in data["signatures"]]
            return [(name, {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith(f"{i}/")})
                    for i, name in enumerate(names)]


def main(argv: list[str]) -> None:
    saved_model_dir, output, requests_file = argv
    requests = warmup.read_requests(requests_file)
    results = run_requests_tf1(saved_model_dir, requests)
    arrays = {f"{i}/{key}": value for i, outputs in enumerate(results) for key, value in outputs.items()}
    np.savez(output, signatures=np.array([name for name, _ in requests]), **arrays)
    for (name, _), outputs in zip(requests, results):
        print(name, {key: value.shape for key, value in outputs.items()})


if __name__ == "__main__":
    main(sys.argv[1:])
