"""Face alignment: similarity transforms onto 5-point templates, and facenet's margin crops.

Every operation exists twice with the same semantics: a NumPy/OpenCV function for scripts
(:func:`align`, :func:`crop`) and a TensorFlow op for graphs (:func:`align_tf`, :func:`crop_tf`).
Pixel centres are at integer coordinates, as in ``cv2.warpAffine`` and ``cv2.resize``.

Landmark order everywhere: left eye, right eye, nose, left mouth corner, right mouth corner
(left/right as seen in the image), as MTCNN returns them.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import tensorflow as tf

# InsightFace's reference points for 112x112 ArcFace crops (x, y).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)
# SphereFace's 112x96 crops: the same points, 8 px to the left.
SPHEREFACE_TEMPLATE = ARCFACE_TEMPLATE - np.array([8.0, 0.0], np.float32)
# dlib's 150x150 chips (get_face_chip_details(shape5, 150, padding=0.25)): where MTCNN's five points
# land in them, the mean over 36 real photos (../shared/reference/dlib_resnet_format.md).
DLIB_TEMPLATE = np.array(
    [[46.73, 44.66], [99.87, 44.89], [73.44, 77.14], [48.87, 98.55], [98.44, 98.57]],
    np.float32,
)
TEMPLATES = {"arcface": (ARCFACE_TEMPLATE, (112, 112)), "sphereface": (SPHEREFACE_TEMPLATE, (112, 96)),
             "dlib": (DLIB_TEMPLATE, (150, 150))}
# SeqFace's crops (huangyangyu/SeqFace code/util.py align_box): eyes levelled by a rotation about
# their centre, a square of side 3 (d + 1), d the eye-centre to mouth-centre height after the
# rotation, with the eye centre at (side / 2, side / 3); its evaluation resizes them to 144x144.
SEQFACE_SIZE = (144, 144)


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)


def template_points(template: str | np.ndarray, image_size: int | Sequence[int] | None = None
                    ) -> tuple[np.ndarray, tuple[int, int]]:
    """(5, 2) template points for an output of ``image_size`` (height, width) and that size.

    A named template (``"arcface"``, ``"sphereface"``, ``"dlib"``) is scaled from its native size to
    ``image_size``; an array is taken as points in the output image.
    """
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise ValueError(f"template: expected one of {sorted(TEMPLATES)} or a (5, 2) array, got {template!r}")
        points, native = TEMPLATES[template]
        size = native if image_size is None else _size(image_size)
        return points * np.array([size[1] / native[1], size[0] / native[0]], np.float32), size
    points = np.asarray(template, np.float32)
    if image_size is None:
        raise ValueError("image_size: required when template is an array of points")
    return points, _size(image_size)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    ``src`` (N, 2) points onto ``dst`` (N, 2): Umeyama (1991), "Least-squares estimation of
    transformation parameters between two point patterns". Returns the 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best fit would reflect: flip the weakest axis
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (src_c ** 2).sum() / len(src)
    scale = (d * sign).sum() / variance if variance > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def similarity_transform_tf(src: tf.Tensor, dst: tf.Tensor) -> tf.Tensor:
    """Batched TF version of :func:`similarity_transform`: (B, N, 2) and (N, 2) -> (B, 2, 3).

    In 2-D the reflection-free least-squares similarity is ``[[a, -b], [b, a]]`` with
    ``a = sum(s . d) / sum|s|^2`` and ``b = sum(s x d) / sum|s|^2`` on centred points.
    """
    src = tf.cast(src, tf.float32)
    dst = tf.cast(tf.broadcast_to(dst, tf.shape(src)), tf.float32)
    src_mean = tf.reduce_mean(src, axis=1, keepdims=True)
    dst_mean = tf.reduce_mean(dst, axis=1, keepdims=True)
    s, d = src - src_mean, dst - dst_mean
    norm = tf.maximum(tf.reduce_sum(s * s, axis=[1, 2]), 1e-12)
    a = tf.reduce_sum(s * d, axis=[1, 2]) / norm
    b = tf.reduce_sum(s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0], axis=1) / norm
    rotation = tf.stack([tf.stack([a, -b], -1), tf.stack([b, a], -1)], axis=1)  # (B, 2, 2)
    translation = dst_mean[:, 0] - tf.einsum("bij,bj->bi", rotation, src_mean[:, 0])
    return tf.concat([rotation, translation[:, :, None]], axis=2)


def _seqface_terms(eye_x, eye_y, cos, sin, mouth_dx, mouth_dy, height, width):
    """(a, b, kx, ky, tx, ty) of SeqFace's crop for NumPy or TF values: output = [[kx a, kx b],
    [-ky b, ky a]] (p - eye) + (tx, ty), a/b the cosine/sine of the eye line."""
    side = 3.0 * (-sin * mouth_dx + cos * mouth_dy + 1.0)  # rotated mouth height + 1, times 3
    kx, ky = width / side, height / side
    # crop pixel i (centre i) -> output pixel (i + 0.5) k - 0.5, the crop starting side/2, side/3 before the eye
    return cos, sin, kx, ky, kx * (side / 2 + 0.5) - 0.5, ky * (side / 3 + 0.5) - 0.5


def seqface_matrix(landmarks: np.ndarray, image_size: int | Sequence[int] | None = None) -> np.ndarray:
    """The 2x3 similarity of SeqFace's crop (see ``SEQFACE_SIZE``) for 5 ``landmarks``, onto an
    output of ``image_size`` (default 144x144)."""
    height, width = _size(image_size or SEQFACE_SIZE)
    marks = np.asarray(landmarks, np.float64).reshape(5, 2)
    eye, mouth = marks[:2].mean(0), marks[3:].mean(0)
    angle = np.arctan2(marks[1, 1] - marks[0, 1], marks[1, 0] - marks[0, 0])
    a, b, kx, ky, tx, ty = _seqface_terms(*eye, np.cos(angle), np.sin(angle), *(mouth - eye), height, width)
    linear = np.array([[kx * a, kx * b], [-ky * b, ky * a]])
    return np.concatenate([linear, (np.array([tx, ty]) - linear @ eye)[:, None]], axis=1)


def seqface_matrix_tf(landmarks: tf.Tensor, image_size: int | Sequence[int] | None = None) -> tf.Tensor:
    """Batched TF version of :func:`seqface_matrix`: (B, 5, 2) -> (B, 2, 3)."""
    height, width = _size(image_size or SEQFACE_SIZE)
    marks = tf.cast(landmarks, tf.float32)
    eye, mouth = tf.reduce_mean(marks[:, :2], axis=1), tf.reduce_mean(marks[:, 3:], axis=1)
    angle = tf.atan2(marks[:, 1, 1] - marks[:, 0, 1], marks[:, 1, 0] - marks[:, 0, 0])
    a, b, kx, ky, tx, ty = _seqface_terms(eye[:, 0], eye[:, 1], tf.cos(angle), tf.sin(angle),
                                          mouth[:, 0] - eye[:, 0], mouth[:, 1] - eye[:, 1], float(height), float(width))
    linear = tf.stack([tf.stack([kx * a, kx * b], -1), tf.stack([-ky * b, ky * a], -1)], axis=1)  # (B, 2, 2)
    translation = tf.stack([tx, ty], -1) - tf.einsum("bij,bj->bi", linear, eye)
    return tf.concat([linear, translation[:, :, None]], axis=2)


def alignment_matrix(landmarks: np.ndarray, template: str | np.ndarray = "arcface",
                     image_size: int | Sequence[int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The 2x3 similarity taking ``landmarks`` (5, 2) onto the template (or SeqFace's crop,
    ``template="seqface"``), and the output size."""
    if isinstance(template, str) and template == "seqface":
        return seqface_matrix(landmarks, image_size), _size(image_size or SEQFACE_SIZE)
    points, size = template_points(template, image_size)
    return similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), points), size


def align(image: np.ndarray, landmarks: np.ndarray, template: str | np.ndarray = "arcface",
          image_size: int | Sequence[int] | None = None) -> np.ndarray:
    """Warps ``image`` so its 5 ``landmarks`` (5, 2) land on the template; bilinear, black border.

    Args:
        image: (H, W, C) array.
        landmarks: (5, 2) x, y in ``image`` pixels.
        template: ``"arcface"`` (112x112), ``"sphereface"`` (112x96), ``"dlib"`` (150x150), ``"seqface"``
            (144x144) or (5, 2) points.
        image_size: output (height, width) or side; default the template's own size.
    """
    matrix, (height, width) = alignment_matrix(landmarks, template, image_size)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_box(box: Sequence[float], margin: float, height: int, width: int) -> np.ndarray:
    """facenet's crop rectangle: the box grown by ``margin / 2`` on every side, clipped to the
    image, truncated to integers: int32 (x1, y1, x2, y2), ``x2``/``y2`` exclusive."""
    x1, y1, x2, y2 = [float(v) for v in box[:4]]
    return np.array([max(x1 - margin / 2, 0), max(y1 - margin / 2, 0),
                     min(x2 + margin / 2, width), min(y2 + margin / 2, height)]).astype(np.int32)


def crop(image: np.ndarray, box: Sequence[float], margin: float = 32, image_size: int | Sequence[int] = 160
         ) -> np.ndarray:
    """facenet's margin crop: :func:`crop_box`, then a bilinear resize to ``image_size``.

    Raises ValueError when the clipped rectangle is empty.
    """
    height, width = _size(image_size)
    x1, y1, x2, y2 = crop_box(box, margin, image.shape[0], image.shape[1])
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {list(box)[:4]} lies outside the {image.shape[1]}x{image.shape[0]} image")
    return cv2.resize(image[y1:y2, x1:x2], (width, height), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------- TF ops
def _sample(image: tf.Tensor, x: tf.Tensor, y: tf.Tensor, constant_border: bool) -> tf.Tensor:
    """Bilinear samples of ``image`` (H, W, C) at float pixel coordinates x, y (N, h, w).

    With ``constant_border`` neighbours outside the image count as 0 (``cv2.BORDER_CONSTANT``);
    otherwise the caller keeps coordinates inside the image. Returns float32 (N, h, w, C).
    """
    image = tf.cast(image, tf.float32)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)

    def pixel(yy, xx):
        inside = (xx >= 0) & (xx < width) & (yy >= 0) & (yy < height)
        values = tf.gather_nd(image, tf.stack([tf.clip_by_value(yy, 0, height - 1),
                                               tf.clip_by_value(xx, 0, width - 1)], axis=-1))
        return values * tf.cast(inside, tf.float32)[..., None] if constant_border else values

    top = pixel(y0, x0) * (1 - fx) + pixel(y0, x0 + 1) * fx
    bottom = pixel(y0 + 1, x0) * (1 - fx) + pixel(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def align_tf(image: tf.Tensor, landmarks: tf.Tensor, template: str | np.ndarray = "arcface",
             image_size: int | Sequence[int] | None = None) -> tf.Tensor:
    """TF op of :func:`align` for N faces of one image: (H, W, C), (N, 5, 2) -> float32 (N, h, w, C)."""
    landmarks = tf.reshape(tf.cast(landmarks, tf.float32), [-1, 5, 2])
    if isinstance(template, str) and template == "seqface":
        height, width = _size(image_size or SEQFACE_SIZE)
        matrix = seqface_matrix_tf(landmarks, (height, width))
    else:
        points, (height, width) = template_points(template, image_size)
        matrix = similarity_transform_tf(landmarks, points)
    # Output pixel (u, v) samples the source at inverse(matrix) @ (u, v, 1).
    rotation, translation = matrix[:, :, :2], matrix[:, :, 2]
    inverse = tf.linalg.inv(rotation)
    v, u = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    grid = tf.stack([u, v], axis=-1)[None] - translation[:, None, None, :]  # (N, h, w, 2)
    source = tf.einsum("bij,bhwj->bhwi", inverse, grid)
    return _sample(image, source[..., 0], source[..., 1], constant_border=True)


def crop_box_tf(boxes: tf.Tensor, margin: float, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """TF op of :func:`crop_box` for (N, >=4) boxes -> int32 (N, 4)."""
    boxes = tf.cast(boxes[:, :4], tf.float32)
    half = margin / 2.0
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    rect = tf.stack([tf.maximum(boxes[:, 0] - half, 0.0), tf.maximum(boxes[:, 1] - half, 0.0),
                     tf.minimum(boxes[:, 2] + half, w), tf.minimum(boxes[:, 3] + half, h)], axis=1)
    return tf.cast(rect, tf.int32)  # truncation, like facenet's np.int32 cast


def crop_tf(image: tf.Tensor, boxes: tf.Tensor, margin: float = 32, image_size: int | Sequence[int] = 160
            ) -> tf.Tensor:
    """TF op of :func:`crop` for N boxes of one image: (H, W, C), (N, >=4) -> float32 (N, h, w, C).

    Samples like ``cv2.resize(INTER_LINEAR)`` of the crop: half-pixel centres, edges clamped to
    the crop. Empty rectangles give black images.
    """
    out_h, out_w = _size(image_size)
    rect = tf.cast(crop_box_tf(boxes, margin, tf.shape(image)[0], tf.shape(image)[1]), tf.float32)
    x1, y1, x2, y2 = [rect[:, i, None] for i in range(4)]
    cols = tf.range(out_w, dtype=tf.float32)[None] + 0.5
    rows = tf.range(out_h, dtype=tf.float32)[None] + 0.5
    x = tf.clip_by_value(x1 + cols * (x2 - x1) / out_w - 0.5, x1, tf.maximum(x2 - 1, x1))  # (N, w)
    y = tf.clip_by_value(y1 + rows * (y2 - y1) / out_h - 0.5, y1, tf.maximum(y2 - 1, y1))  # (N, h)
    x = tf.broadcast_to(x[:, None, :], [tf.shape(x)[0], out_h, out_w])
    y = tf.broadcast_to(y[:, :, None], [tf.shape(y)[0], out_h, out_w])
    # The clamp keeps the 2x2 neighbourhood inside the crop: at x = x2 - 1 the right weight is 0.
    out = _sample(image, x, y, constant_border=True)
    empty = (rect[:, 2] <= rect[:, 0]) | (rect[:, 3] <= rect[:, 1])
    return tf.where(empty[:, None, None, None], tf.zeros_like(out), out)
