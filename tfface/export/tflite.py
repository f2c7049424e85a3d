"""TFLite files of an embedder (float32 and dynamic-range int8), run with the LiteRT interpreter.

Both take uint8 faces (B, H, W, 3) and return L2-normalised embeddings (B, D), like the
SavedModel's ``serving_default``: the standardization is inside. ``tf.lite.Interpreter`` is
deprecated since TF 2.20; :func:`run_tflite` uses ``ai_edge_litert`` (``pip install ai-edge-litert``).
"""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from tfface.core.errors import UserError

TFLITE_DIR = "tflite"
FILES = {"float32": "embedder_float32.tflite", "int8": "embedder_int8.tflite"}


def convert(embedder: keras.Model, quantization: str = "float32") -> bytes:
    """The embedder as a TFLite flatbuffer: ``"float32"``, or ``"int8"`` (dynamic-range:
    int8 weights, float activations; needs no calibration data)."""
    if quantization not in FILES:
        raise UserError(f"quantization: expected one of {list(FILES)}, got {quantization!r}")
    _, height, width, _ = embedder.input_shape

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")])
    def embed(images):
        embeddings = embedder(tf.cast(images, tf.float32), training=False)
        return {"embeddings": tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)}

    concrete = embed.get_concrete_function()
    holder = tf.Module()
    holder.variables_ = list(concrete.variables)  # the tf.Variables to freeze (not the Keras wrappers)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    if quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def export_tflite(embedder: keras.Model, directory: str) -> dict[str, str]:
    """Writes ``directory/tflite/embedder_{float32,int8}.tflite``; returns {quantization: path}."""
    out = os.path.join(directory, TFLITE_DIR)
    os.makedirs(out, exist_ok=True)
    paths = {}
    for quantization, name in FILES.items():
        paths[quantization] = os.path.join(out, name)
        tmp = f"{paths[quantization]}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(convert(embedder, quantization))
        os.replace(tmp, paths[quantization])
    return paths


def run_tflite(model: str | bytes, faces: np.ndarray) -> np.ndarray:
    """Embeds uint8 faces (B, H, W, 3) with a .tflite file (path or bytes) -> (B, D) float32."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model) if isinstance(model, bytes) else Interpreter(model_path=model)
    (source,) = interpreter.get_input_details()
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or tuple(faces.shape[1:]) != tuple(source["shape"][1:]):
        raise UserError(f"faces: expected uint8 (B, {', '.join(map(str, source['shape'][1:]))}), "
                        f"got {faces.dtype} {faces.shape}")
    interpreter.resize_tensor_input(source["index"], list(faces.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], faces)
    interpreter.invoke()
    (target,) = interpreter.get_output_details()
    return interpreter.get_tensor(target["index"]).copy()
