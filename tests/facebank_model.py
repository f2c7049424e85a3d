"""A tiny face model trained in seconds on real ORL photos, exported with its alignment and a
calibrated threshold.json: shared by the facebank and video tests (built once per process).

Identities (ORL ``s1``..``s30``, photos ``1``..``10``):
  * trained on s1..s20, photos 1..7 (CosFace head);
  * the threshold is calibrated on pairs of s21..s25 (people the model never saw, as LFW is);
  * the tests enrol s1..s10 (photos 1..5), identify their unseen photos 8..10, and must reject
    s26..s30 (never seen, not enrolled).
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tfface_align
from tfface.core import images
from tfface.evaluation import evaluate, thresholds
from tfface.evaluation.thresholds import Threshold
from tfface.export import export_saved_model
from tfface.heads import CosFace
from tfface.heads.loss import head_loss
from tfface.recognition.inference import load_embedder
from tfface.core.preprocessing import Standardize

SIZE = 32
ALIGNMENT = {"align": "arcface", "image_size": [SIZE, SIZE], "margin": 0}
TRAIN_IDS, TRAIN_PHOTOS = range(1, 21), range(1, 8)
CALIBRATION_IDS = range(21, 26)
BANK_IDS, BANK_PHOTOS, QUERY_PHOTOS = range(1, 11), range(1, 6), range(8, 11)
STRANGER_IDS, STRANGER_PHOTOS = range(26, 31), range(1, 7)


def orl_path(orl_dir: str, person: int, photo: int) -> str:
    return os.path.join(orl_dir, f"s{person}", f"{photo}.pgm")


def aligned(detector: tfface_align.MTCNN, paths: list[str]) -> tuple[np.ndarray, list[int]]:
    """Main-face arcface crops of the photos that have a face, and their indices."""
    photos = [images.load(p) for p in paths]
    crops, used = [], []
    for i, (photo, faces) in enumerate(zip(photos, detector.detect(photos))):
        if len(faces.boxes):
            crops.append(tfface_align.align(photo, faces.landmarks[0], "arcface", (SIZE, SIZE)))
            used.append(i)
    return np.stack(crops), used


def tiny_embedder() -> keras.Model:
    """pixels -> standardize -> backbone (a small CNN), the layout every tfface embedder has."""
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D()(layers.ReLU()(layers.BatchNormalization()(x)))
    x = layers.Dense(64, use_bias=False)(layers.Dropout(0.2)(layers.Flatten()(x)))
    backbone = keras.Model(inputs, layers.BatchNormalization()(x), name="tiny")
    pixels = keras.Input((SIZE, SIZE, 3), name="pixels")
    return keras.Model(pixels, backbone(Standardize("minus_one_to_one", name="standardize")(pixels)),
                       name="tiny_embedder")


def train(faces: np.ndarray, labels: np.ndarray, epochs: int = 60) -> keras.Model:
    keras.utils.set_random_seed(0)
    embedder, head = tiny_embedder(), CosFace(int(labels.max()) + 1, scale=16.0, margin=0.35)
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            x = tf.image.random_flip_left_right(x)
            loss = tf.reduce_mean(head_loss(y, head([embedder(x, training=True), y])))
        variables = embedder.trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng = np.random.default_rng(0)
    faces = faces.astype(np.float32)
    for _ in range(epochs):
        order = rng.permutation(len(faces))
        for start in range(0, len(faces), 32):
            step(faces[order[start:start + 32]], labels[order[start:start + 32]])
    return embedder


def calibrate(embedder: keras.Model, faces: np.ndarray, people: np.ndarray, fingerprint: str) -> Threshold:
    """Best-accuracy threshold (squared Euclidean) on all same-person pairs and as many others."""
    embeddings = tf.math.l2_normalize(embedder(faces.astype(np.float32), training=False), 1).numpy()
    same = [(i, j) for i in range(len(people)) for j in range(i + 1, len(people)) if people[i] == people[j]]
    other = [(i, j) for i in range(len(people)) for j in range(i + 1, len(people)) if people[i] != people[j]]
    other = [other[k] for k in np.random.default_rng(0).choice(len(other), len(same), replace=False)]
    pairs = same + other
    result = evaluate(np.stack([embeddings[k] for pair in pairs for k in pair]),
                      np.array([True] * len(same) + [False] * len(other)))
    return thresholds.calibrate(result, 0, "ORL s21-s25", fingerprint)


@functools.cache
def orl_model(orl_dir: str) -> str:
    """Trains, exports and calibrates the model once per process; returns its version directory."""
    detector = tfface_align.MTCNN()
    train_paths = [orl_path(orl_dir, i, j) for i in TRAIN_IDS for j in TRAIN_PHOTOS]
    faces, used = aligned(detector, train_paths)
    labels = np.array([i for i in range(len(TRAIN_IDS)) for _ in TRAIN_PHOTOS])[used]
    embedder = train(faces, labels)
    base = tempfile.mkdtemp(prefix="tfface-orl-model-")
    atexit.register(shutil.rmtree, base, True)
    version = export_saved_model(embedder, base, "orl", alignment=ALIGNMENT)
    calibration_paths = [orl_path(orl_dir, i, j) for i in CALIBRATION_IDS for j in range(1, 11)]
    calibration, used = aligned(detector, calibration_paths)
    people = np.repeat(np.arange(len(CALIBRATION_IDS)), 10)[used]
    thresholds.save_threshold(calibrate(embedder, calibration, people, load_embedder(version).fingerprint), version)
    return version


@functools.cache
def people_bank(orl_dir: str) -> str:
    """A facebank of s1, s2, s3 (photos 1-5) built once per process with
    ``python -m tfface.facebank build``; returns its directory (copy it before changing it)."""
    base = tempfile.mkdtemp(prefix="tfface-orl-bank-")
    atexit.register(shutil.rmtree, base, True)
    for person in (1, 2, 3):
        os.makedirs(os.path.join(base, "people", f"s{person}"))
        for photo in BANK_PHOTOS:
            shutil.copy(orl_path(orl_dir, person, photo), os.path.join(base, "people", f"s{person}"))
    bank = os.path.join(base, "bank")
    out = subprocess.run([sys.executable, "-m", "tfface.facebank", "build", os.path.join(base, "people"),
                          "--facebank", bank, "--model", orl_model(orl_dir)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise AssertionError(f"facebank build failed: {out.stderr}")
    return bank
