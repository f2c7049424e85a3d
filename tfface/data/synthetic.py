"""The embedded default dataset: procedurally drawn, already aligned face-like identities.

An identity is a fixed set of geometry and colour parameters (face shape, skin, hair, eyes,
brows, nose, mouth, optional glasses or beard). Every image of it redraws those with pose
jitter (rotation, scale, shift, yaw-like feature shift), expression, lighting gradients,
blur, sensor noise and, sometimes, an occluder. Images are written through the TFRecord
writer for training; identities never used in training are written as an LFW-style folder
with a ``pairs.txt`` for verification. Everything is a deterministic function of the seed.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import cv2
import numpy as np

from tfface.data import tfrecord

CANVAS = 112  # aligned face crops, like the arcface template


@dataclasses.dataclass(frozen=True)
class Identity:
    """Geometry (pixels at 112 px) and colours (BGR) that define one synthetic person."""

    face_axes: tuple[float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_style: int  # 0 bald, 1 cap, 2 cap + long sides
    hair_height: float
    eye_dx: float
    eye_y: float
    eye_axes: tuple[float, float]
    iris: tuple[float, float, float]
    brow_gap: float
    brow_tilt: float
    brow_thickness: int
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    mouth_curve: float
    lips: tuple[float, float, float]
    glasses: bool
    beard: bool


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draws the parameters of one identity."""
    red = rng.uniform(110, 245)
    skin = (red * rng.uniform(0.55, 0.8) * rng.uniform(0.7, 0.95), red * rng.uniform(0.65, 0.85), red)
    hair_palette = np.array([[20, 20, 25], [30, 50, 90], [60, 110, 170], [150, 150, 155], [40, 40, 120]], float)
    hair = tuple(hair_palette[rng.integers(len(hair_palette))] * rng.uniform(0.8, 1.2))
    return Identity(
        face_axes=(rng.uniform(30, 42), rng.uniform(40, 52)),
        skin=skin,
        hair=hair,
        hair_style=int(rng.integers(3)),
        hair_height=rng.uniform(6, 16),
        eye_dx=rng.uniform(12, 20),
        eye_y=rng.uniform(-10, 0),
        eye_axes=(rng.uniform(3.5, 6.5), rng.uniform(2.0, 3.8)),
        iris=tuple(rng.uniform(20, 160, 3)),
        brow_gap=rng.uniform(5, 10),
        brow_tilt=rng.uniform(-0.35, 0.35),
        brow_thickness=int(rng.integers(1, 4)),
        nose_length=rng.uniform(8, 17),
        nose_width=rng.uniform(3, 8),
        mouth_y=rng.uniform(15, 26),
        mouth_width=rng.uniform(7, 17),
        mouth_curve=rng.uniform(-4, 4),
        lips=(skin[0] * 0.6, skin[1] * 0.5, min(255.0, skin[2] * 1.05)),
        glasses=bool(rng.random() < 0.15),
        beard=bool(rng.random() < 0.15),
    )


def render(identity: Identity, rng: np.random.Generator) -> np.ndarray:
    """Draws one BGR uint8 (112, 112, 3) image of ``identity`` with random nuisances."""
    p = identity
    image = np.empty((CANVAS, CANVAS, 3), np.float32)
    image[:] = rng.uniform(30, 230, 3)
    c = CANVAS / 2.0
    yaw = rng.uniform(-4, 4)  # features slide sideways when the head turns
    fx = lambda dx: c + dx + yaw  # noqa: E731
    pt = lambda x, y: (int(round(x * 16)), int(round(y * 16)))  # noqa: E731  (4 fractional bits)
    draw = dict(lineType=cv2.LINE_AA, shift=4)

    if p.hair_style == 2:
        cv2.ellipse(image, pt(c, c + 4), pt(p.face_axes[0] + 7, p.face_axes[1] + 6), 0, 180, 360, p.hair, -1, **draw)
        cv2.rectangle(image, pt(c - p.face_axes[0] - 7, c), pt(c + p.face_axes[0] + 7, c + 40), p.hair, -1, **draw)
    cv2.ellipse(image, pt(c, c + 4), pt(*p.face_axes), 0, 0, 360, p.skin, -1, **draw)
    if p.hair_style >= 1:
        cv2.ellipse(
            image, pt(c, c + 4 - p.face_axes[1] + p.hair_height), pt(p.face_axes[0] + 1, p.hair_height + 6),
            0, 180, 360, p.hair, -1, **draw,
        )
    if p.beard:
        cv2.ellipse(image, pt(c, c + 4), pt(*p.face_axes), 0, 20, 160, p.hair, 5, **draw)

    openness = rng.uniform(0.6, 1.15)
    eye_y = c + p.eye_y
    for side in (-1, 1):
        ex = fx(side * p.eye_dx)
        axes = (p.eye_axes[0] * (1 - 0.04 * side * yaw), p.eye_axes[1] * openness)
        cv2.ellipse(image, pt(ex, eye_y), pt(*axes), 0, 0, 360, (235, 235, 235), -1, **draw)
        cv2.circle(image, pt(ex + yaw * 0.3, eye_y), int(16 * min(axes) * 0.9), p.iris, -1, **draw)
        by = eye_y - p.eye_axes[1] - p.brow_gap
        tilt = side * p.brow_tilt * p.eye_axes[0]
        cv2.line(image, pt(ex - p.eye_axes[0], by + tilt), pt(ex + p.eye_axes[0], by - tilt), p.hair, p.brow_thickness, **draw)
        if p.glasses:
            cv2.circle(image, pt(ex, eye_y), int(16 * (p.eye_axes[0] + 3)), (30, 30, 30), 1, **draw)
    nose_top, nose_tip = eye_y + 2, eye_y + 2 + p.nose_length
    shade = tuple(0.75 * v for v in p.skin)
    cv2.line(image, pt(fx(0), nose_top), pt(fx(-p.nose_width / 2), nose_tip), shade, 1, **draw)
    cv2.line(image, pt(fx(-p.nose_width / 2), nose_tip), pt(fx(p.nose_width / 2), nose_tip), shade, 1, **draw)
    curve = p.mouth_curve + rng.uniform(-2, 2)
    mouth = np.array(
        [[fx(t * p.mouth_width), c + p.mouth_y + curve * (1 - t * t)] for t in np.linspace(-1, 1, 9)]
    )
    cv2.polylines(image, [np.round(mouth * 16).astype(np.int32)], False, p.lips, 2, **draw)

    angle, scale = rng.uniform(-10, 10), rng.uniform(0.9, 1.1)
    warp = cv2.getRotationMatrix2D((c, c), angle, scale)
    warp[:, 2] += rng.uniform(-5, 5, 2)
    image = cv2.warpAffine(image, warp, (CANVAS, CANVAS), borderMode=cv2.BORDER_REPLICATE)

    if rng.random() < 0.25:  # occluder: a hand, a mask, sunglasses...
        w, h = rng.uniform(20, 60), rng.uniform(12, 40)
        x0, y0 = rng.uniform(0, CANVAS - w), rng.uniform(20, CANVAS - h)
        cv2.rectangle(image, pt(x0, y0), pt(x0 + w, y0 + h), tuple(rng.uniform(0, 255, 3)), -1, **draw)
    direction = rng.normal(size=2)
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS] / CANVAS - 0.5
    light = rng.uniform(0.7, 1.3) * (1 + rng.uniform(0, 0.6) * (direction[0] * xs + direction[1] * ys))
    image = image * light[..., None]
    sigma = rng.uniform(0, 1.2)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image += rng.normal(0, rng.uniform(2, 10), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


DEGRADATIONS = ("blur", "noise", "occlusion")
MAX_LEVEL = 3


def degrade(image: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (uint8, any size) degraded by ``kind`` at strength ``level`` in 0 (none) .. 3:
    Gaussian blur of sigma 2, 4, 6 px at 112 px (scaled with the width); Gaussian noise of std
    40, 80, 120 grey levels (at 112 px: shrinking the image averages much of it out); or an occluder of random colour over 35, 50, 65 % of the image. For
    quality-score experiments (``bench/quality_heads.py``): the level is the ground-truth rank."""
    if kind not in DEGRADATIONS or not 0 <= int(level) <= MAX_LEVEL:
        raise ValueError(f"degrade: expected a kind in {DEGRADATIONS} and a level in 0..{MAX_LEVEL}, got {kind!r}, {level}")
    if level == 0:
        return image.copy()
    out = image.astype(np.float32)
    height, width = out.shape[:2]
    if kind == "blur":
        out = cv2.GaussianBlur(out, (0, 0), 2.0 * level * width / CANVAS)
    elif kind == "noise":
        out += rng.normal(0, 40.0 * level, out.shape)
    else:
        area = (0.2 + 0.15 * level) * height * width
        w = rng.uniform(np.sqrt(area) * 0.7, min(width, np.sqrt(area) * 1.4))
        h = min(height, area / w)
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        out[int(y0):int(y0 + h), int(x0):int(x0 + w)] = rng.uniform(0, 255, 3)
    return np.clip(out, 0, 255).astype(np.uint8)


def _encode(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def _identity_rng(seed: int, index: int, image: int = -1) -> np.random.Generator:
    return np.random.default_rng([seed, index, image + 1])


def identity_name(index: int) -> str:
    return f"synth_{index:05d}"


def write_train_split(output_dir: str, identities: range, images_per_identity: int, seed: int, num_shards: int) -> dict:
    """Renders ``identities`` into TFRecord shards; returns ``dataset_info.json``'s content."""
    names = [identity_name(i) for i in identities]
    with tfrecord.ShardedWriter(
        output_dir, num_shards, names, image_size=(CANVAS, CANVAS), alignment="synthetic",
        extra_info={"generator": "tfface.data.synthetic", "seed": seed},
    ) as writer:
        for label, index in enumerate(identities):
            identity = sample_identity(_identity_rng(seed, index))
            for k in range(images_per_identity):
                encoded = _encode(render(identity, _identity_rng(seed, index, k)))
                writer.write(tfrecord.make_example(encoded, label, CANVAS, CANVAS, text=names[label]))
    return tfrecord.read_dataset_info(output_dir)


def write_verification_split(
    output_dir: str, identities: range, images_per_identity: int, seed: int, nrof_folds: int = 10
) -> str:
    """Writes ``identities`` as an LFW-style folder plus ``pairs.txt``; returns the pairs path.

    Each fold has as many same-identity pairs as different-identity pairs, and as many of each
    as there are identities per fold (LFW's View 2 has 10 folds of 300 + 300).
    """
    tmp = output_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for index in identities:
        identity = sample_identity(_identity_rng(seed, index))
        folder = os.path.join(tmp, identity_name(index))
        os.makedirs(folder)
        for k in range(images_per_identity):
            with open(os.path.join(folder, f"{identity_name(index)}_{k + 1:04d}.jpg"), "wb") as f:
                f.write(_encode(render(identity, _identity_rng(seed, index, k))))
    rng = np.random.default_rng([seed, 7])
    ids = np.array(identities)
    per_fold = len(ids) // nrof_folds
    lines = [f"{nrof_folds}\t{per_fold}"]
    for fold in range(nrof_folds):
        fold_ids = ids[fold * per_fold:(fold + 1) * per_fold]  # folds are identity-disjoint, as in LFW
        for index in fold_ids:
            a, b = rng.choice(images_per_identity, 2, replace=False) + 1
            lines.append(f"{identity_name(index)}\t{a}\t{b}")
        for index in fold_ids:
            other = rng.choice(fold_ids[fold_ids != index])
            a, b = rng.integers(1, images_per_identity + 1, 2)
            lines.append(f"{identity_name(index)}\t{a}\t{identity_name(other)}\t{b}")
    with open(os.path.join(tmp, "pairs.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    shutil.rmtree(output_dir, ignore_errors=True)
    os.replace(tmp, output_dir)
    return os.path.join(output_dir, "pairs.txt")


def make_synthetic_dataset(
    output_dir: str,
    num_train_identities: int = 300,
    train_images_per_identity: int = 16,
    num_verify_identities: int = 200,
    verify_images_per_identity: int = 4,
    num_shards: int = 4,
    seed: int = 0,
) -> dict[str, str]:
    """Writes ``output_dir/train`` (TFRecords) and ``output_dir/verify`` (LFW layout + pairs.txt).

    Verification identities are disjoint from training identities. Already complete parts are
    kept (a rerun is a no-op). Returns the paths ``train_dir``, ``verify_dir`` and ``pairs``.
    """
    train_dir, verify_dir = os.path.join(output_dir, "train"), os.path.join(output_dir, "verify")
    pairs = os.path.join(verify_dir, "pairs.txt")
    if not os.path.isfile(os.path.join(train_dir, tfrecord.INFO_FILE)):
        write_train_split(train_dir, range(num_train_identities), train_images_per_identity, seed, num_shards)
    if not os.path.isfile(pairs):
        verify_ids = range(num_train_identities, num_train_identities + num_verify_identities)
        write_verification_split(verify_dir, verify_ids, verify_images_per_identity, seed)
    return {"train_dir": train_dir, "verify_dir": verify_dir, "pairs": pairs}
