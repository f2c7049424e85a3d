"""Batched MTCNN face detector: image pyramid, P-Net, R-Net, O-Net and NMS, all in one TF graph."""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from tfface_align.image_io import read_image, to_rgb_uint8
from tfface_align.mtcnn.inference import PIXEL_MEAN, logit, patch_forward, pnet_forward, pnet_regression
from tfface_align.mtcnn.weights import FACENET_FILES, build_net

PNET_CELL = 12.0  # P-Net's window
PNET_STRIDE = 2.0
PATCH_BUCKET = 4  # smallest R-Net / O-Net batch


class Faces(NamedTuple):
    """Detections in one image, in original pixels, sorted by decreasing score.

    boxes: float32 (N, 5): x1, y1, x2, y2, score.
    landmarks: float32 (N, 5, 2): (x, y) of left eye, right eye, nose, left and right mouth corner
        (left/right as seen in the image).
    """

    boxes: np.ndarray
    landmarks: np.ndarray


def _square(boxes: tf.Tensor) -> tf.Tensor:
    """Grows (N, 4) x1, y1, x2, y2 boxes into squares around the same centre."""
    x1, y1, x2, y2 = tf.unstack(boxes, axis=1)
    w, h = x2 - x1, y2 - y1
    side = tf.maximum(w, h)
    x1 = x1 + 0.5 * (w - side)
    y1 = y1 + 0.5 * (h - side)
    return tf.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _regress(boxes: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Applies R-Net/O-Net offsets (fractions of the box size, pixel-inclusive sizes)."""
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    return boxes + offsets * tf.stack([w, h, w, h], axis=1)


def _batched_nms(boxes: tf.Tensor, scores: tf.Tensor, batch: tf.Tensor, count: tf.Tensor,
                 iou: float) -> tf.Tensor:
    """Greedy IoU NMS separately per image of a batch of ``count``. Returns kept indices, by
    image, then by decreasing score. (One NMS over all images, their boxes shifted apart, would
    check every candidate against the kept boxes of all images: quadratic in the batch size.)"""

    def image(b, kept):
        members = tf.cast(tf.where(tf.equal(batch, b))[:, 0], tf.int32)
        keep = tf.image.non_max_suppression(tf.gather(boxes, members), tf.gather(scores, members),
                                            tf.size(members), iou)
        return b + 1, kept.write(b, tf.gather(members, keep))

    def each_image():
        kept = tf.TensorArray(tf.int32, size=count, infer_shape=False, element_shape=[None])
        return tf.while_loop(lambda b, _: b < count, image, (tf.constant(0), kept))[1].concat()

    return tf.cond(count > 1, each_image,
                   lambda: tf.image.non_max_suppression(boxes, scores, tf.shape(scores)[0], iou))


def _overlap(a: tf.Tensor, b: tf.Tensor, smaller: bool) -> tf.Tensor:
    """Pairwise overlaps of (n, 4) and (m, 4) boxes: IoU, or intersection / smaller area."""
    ax1, ay1, ax2, ay2 = [t[:, None] for t in tf.unstack(a, axis=1)]
    bx1, by1, bx2, by2 = [t[None, :] for t in tf.unstack(b, axis=1)]
    inter = (tf.maximum(0.0, tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1))
             * tf.maximum(0.0, tf.minimum(ay2, by2) - tf.maximum(ay1, by1)))
    area_a, area_b = (ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1)
    denominator = tf.minimum(area_a, area_b) if smaller else area_a + area_b - inter
    return inter / tf.maximum(denominator, 1e-12)


def _suppress_by_any(boxes: tf.Tensor, scores: tf.Tensor, batch: tf.Tensor, span: tf.Tensor,
                     threshold: float, smaller: bool = False, chunk: int = 1024) -> tf.Tensor:
    """Drops every box that overlaps *any* higher-scored box of its image by more than
    ``threshold``, suppressed or not (the `mtcnn` package's rule; greedy NMS would let a box
    survive when the box overlapping it was itself suppressed). Returns kept indices by
    decreasing score. Pairs are compared in chunks of rows, so memory stays ``chunk * N``."""
    n = tf.shape(scores)[0]
    order = n - 1 - tf.argsort(scores[::-1], direction="DESCENDING", stable=True)  # ties: later first
    shift = tf.cast(tf.gather(batch, order), tf.float32)[:, None] * span
    ranked = tf.gather(boxes, order) + shift
    columns = tf.range(n)

    def body(start, worst):
        rows = ranked[start:start + chunk]
        earlier = (start + tf.range(tf.shape(rows)[0]))[:, None] < columns[None, :]
        overlaps = tf.where(earlier, _overlap(rows, ranked, smaller), 0.0)
        return start + chunk, tf.maximum(worst, tf.reduce_max(overlaps, axis=0))

    _, worst = tf.while_loop(lambda start, _: start < n, body, (tf.constant(0), tf.zeros([n])))
    return tf.gather(order, tf.where(worst <= threshold)[:, 0])


def _batched_nms_min(boxes: tf.Tensor, scores: tf.Tensor, batch: tf.Tensor, threshold: float) -> tf.Tensor:
    """Greedy NMS with overlap = intersection / smaller area (the original last-stage NMS)."""
    same_image = tf.cast(tf.equal(batch[:, None], batch[None, :]), tf.float32)
    overlaps = _overlap(boxes, boxes, smaller=True) * same_image
    return tf.image.non_max_suppression_overlaps(overlaps, scores, tf.shape(scores)[0], threshold)


class MTCNN:
    """MTCNN face detector with 5 landmarks, batched, with every step inside one TF graph.

    Zhang, Zhang, Li and Qiao, 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
    Convolutional Networks" (https://arxiv.org/abs/1604.02878), with the original weights.

    The image pyramid runs P-Net on every scale; proposals are thresholded, regressed and
    suppressed per scale and across scales, squared, cropped with ``tf.image.crop_and_resize``
    for R-Net, refined, suppressed again, and cropped for O-Net, which gives the final boxes,
    scores and landmarks (the last suppression uses intersection over the smaller box, as in the
    original). Everything after decoding runs in one ``tf.function``; a batch is one graph call.

    Conventions follow the original and the ``mtcnn`` PyPI package, so results agree with it:
    P-Net windows span pixels 2x+1..2x+12, regression before suppression, bilinear patch crops
    of the normalised image. Suppression is ``tf.image.non_max_suppression`` (greedy NMS,
    ``nms="greedy"``, default); ``nms="any"`` reproduces the ``mtcnn`` package's rule instead (a
    box goes when *any* higher-scored box overlaps it, suppressed or not): closest agreement with
    that package, but quadratic in the number of proposals, so slower on very large photos.

    Args:
        min_face_size: smallest face side to find, in pixels (sets the first pyramid scale).
        thresholds: face-probability thresholds of P-Net, R-Net and O-Net.
        factor: ratio between consecutive pyramid scales.
        nms_thresholds: IoU thresholds of P-Net per scale, P-Net across scales, R-Net, and the
            O-Net overlap (intersection over the smaller box).
        weights_dir: directory with facenet's ``det1.npy``, ``det2.npy``, ``det3.npy`` (pickles:
            trusted files only); default the installed ``mtcnn`` package's weights.
        batch_size: at most this many images per graph call.
        max_batch_pixels: at most this many pixels per graph call (images of one call are padded
            to a common size; bounds memory).
        nms: ``"greedy"`` (``tf.image.non_max_suppression``) or ``"any"`` (the ``mtcnn``
            package's suppression rule).
        max_padding: images of different sizes share a graph call when padding them to a common
            size adds at most this share of pixels. The pyramid of a padded image is resampled
            on a slightly different grid, which moves boxes by a pixel or two; 0 batches only
            images of identical size (results then equal one-image calls).

    Example:
        >>> det = MTCNN()
        >>> faces = det.detect("photo.jpg")      # Faces(boxes (N, 5), landmarks (N, 5, 2))
        >>> many = det.detect([img_a, img_b])    # one Faces per image; sizes may differ
    """

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        nms_thresholds: Sequence[float] = (0.5, 0.7, 0.7, 0.7),
        weights_dir: str | None = None,
        batch_size: int = 64,
        max_batch_pixels: int = 1 << 24,
        nms: str = "greedy",
        max_padding: float = 0.25,
    ):
        if min_face_size < 12:
            raise ValueError(f"min_face_size: expected >= 12 (P-Net's window), got {min_face_size}")
        if not 0 < factor < 1:
            raise ValueError(f"factor: expected a number in (0, 1), got {factor}")
        if nms not in ("greedy", "any"):
            raise ValueError(f"nms: expected 'greedy' or 'any', got {nms!r}")
        self.nms = nms
        if len(thresholds) != 3 or len(nms_thresholds) != 4:
            raise ValueError("thresholds: expected 3 values, nms_thresholds: expected 4 values")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.nms_thresholds = tuple(float(t) for t in nms_thresholds)
        self.batch_size = int(batch_size)
        self.max_padding = float(max_padding)
        self.max_batch_pixels = int(max_batch_pixels)
        files = {net: f"{weights_dir}/{name}" for net, name in FACENET_FILES.items()} if weights_dir else {}
        self.pnet = build_net("pnet", files.get("pnet"))
        self.rnet = build_net("rnet", files.get("rnet"))
        self.onet = build_net("onet", files.get("onet"))
        self._batch_fn = tf.function(
            self.detect_batch_graph,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                             tf.TensorSpec([None, 2], tf.int32)],
            reduce_retracing=True,
        )

    # ------------------------------------------------------------------ graph
    def _nms(self, boxes, scores, batch, shape, threshold, smaller=False):
        """Suppression per image of a batch of images of ``shape`` (B, H, W, 3)."""
        if self.nms == "greedy":
            if smaller:
                return _batched_nms_min(boxes, scores, batch, threshold)
            return _batched_nms(boxes, scores, batch, shape[0], threshold)
        span = 4.0 * tf.cast(tf.maximum(shape[1], shape[2]), tf.float32) + 64.0  # shifts images apart
        return _suppress_by_any(boxes, scores, batch, span, threshold, smaller)

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid scales for an image of this size (NumPy mirror of the graph's loop)."""
        first = PNET_CELL / self.min_face_size
        side = min(height, width) * first
        count = 0 if side < PNET_CELL else int(math.floor(math.log(PNET_CELL / side) / math.log(self.factor) + 1e-9)) + 1
        return [first * self.factor ** k for k in range(count)]

    def _pnet_stage(self, images: tf.Tensor):
        """P-Net over the pyramid. Returns boxes (N, 4), scores (N,), batch indices (N,)."""
        shape = tf.shape(images)
        height = tf.cast(shape[1], tf.float32)
        width = tf.cast(shape[2], tf.float32)
        first = PNET_CELL / self.min_face_size
        side = tf.minimum(height, width) * first
        count = tf.cast(tf.floor(tf.math.log(PNET_CELL / side) / math.log(self.factor) + 1e-6), tf.int32) + 1
        count = tf.where(side < PNET_CELL, 0, count)
        threshold, nms_scale = logit(self.thresholds[0]), self.nms_thresholds[0]

        def body(k, boxes_ta, scores_ta, batch_ta):
            scale = first * tf.pow(self.factor, tf.cast(k, tf.float32))
            size = tf.cast(tf.math.floor(tf.stack([height, width]) * scale), tf.int32)
            scaled = tf.image.resize(images, size, method="area")
            activations, logits = pnet_forward(self.pnet, scaled)
            where = tf.where(logits > threshold)
            offsets = pnet_regression(self.pnet, tf.gather_nd(activations, where))
            scores = tf.sigmoid(tf.gather_nd(logits, where))
            batch = tf.cast(where[:, 0], tf.int32)
            yx = tf.cast(where[:, 1:], tf.float32) * PNET_STRIDE
            # The original's window: pixels 2x+1 .. 2x+12 (1-based, inclusive), offsets in units
            # of its corner distance 11.
            corners = tf.concat([yx[:, ::-1] + 1.0, yx[:, ::-1] + PNET_CELL], axis=1)  # x1, y1, x2, y2
            boxes = (corners + offsets * (PNET_CELL - 1.0)) / scale
            keep = self._nms(boxes, scores, batch, shape, nms_scale)
            i = k + 1  # slot 0 holds an empty entry (concat needs one)
            return (k + 1, boxes_ta.write(i, tf.gather(boxes, keep)),
                    scores_ta.write(i, tf.gather(scores, keep)), batch_ta.write(i, tf.gather(batch, keep)))

        def array(dtype, shape):
            return tf.TensorArray(dtype, size=1, dynamic_size=True, infer_shape=False,
                                  element_shape=shape).write(0, tf.zeros([0] + shape[1:], dtype))

        # Levels are independent: let all of them run at once (a pyramid has at most 32 levels up to
        # 2**20 pixels a side), so the single-threaded ops of one level (area resize, NMS) overlap
        # with the convolutions of others. 4 in flight instead of 32: ~30% slower on 2 cores.
        _, boxes_ta, scores_ta, batch_ta = tf.while_loop(
            lambda k, *_: k < count, body,
            (tf.constant(0), array(tf.float32, [None, 4]), array(tf.float32, [None]),
             array(tf.int32, [None])),
            parallel_iterations=32,
        )
        return boxes_ta.concat(), scores_ta.concat(), batch_ta.concat()

    @staticmethod
    def _run_on_patches(net, images: tf.Tensor, boxes: tf.Tensor, batch: tf.Tensor, size: int):
        """Crops ``size`` x ``size`` patches of the boxes (bilinear) and runs ``net`` on them.

        The batch is padded with blank patches to a coarse size grid: never empty (convolutions
        on an empty batch fail with oneDNN) and few distinct shapes (compiled kernels reused)."""
        shape = tf.cast(tf.shape(images), tf.float32)
        norm = tf.stack([shape[1], shape[2], shape[1], shape[2]])
        yx_boxes = tf.gather(boxes, [1, 0, 3, 2], axis=1) / norm
        patches = tf.image.crop_and_resize(images, yx_boxes, batch, [size, size],
                                           extrapolation_value=PIXEL_MEAN)  # outside: 0 once normalised
        count = tf.shape(patches)[0]
        # Round count + 1 up to a multiple of a quarter of its power of two (<= 25% waste).
        step = tf.maximum(PATCH_BUCKET, tf.cast(2.0 ** tf.floor(
            tf.math.log(tf.cast(count + 1, tf.float32)) / math.log(2.0) - 2.0), tf.int32))
        padded = (count + step) // step * step
        # concat, not tf.pad: grappler fuses Pad into the next Conv2D, wrongly for the batch axis.
        patches = tf.concat([patches, tf.zeros([padded - count, size, size, 3])], axis=0)
        return [out[:count] for out in patch_forward(net, patches)]

    def detect_batch_graph(self, images: tf.Tensor, sizes: tf.Tensor):
        """The whole cascade on a padded batch, for use inside a ``tf.function``.

        Args:
            images: uint8 or float32 (B, H, W, 3) RGB pixels in [0, 255]; image b occupies the top-left
                ``sizes[b]`` (height, width) of the batch, the rest is padding.
            sizes: int32 (B, 2) valid height and width of every image.

        Returns:
            boxes (N, 5) x1, y1, x2, y2, score; landmarks (N, 5, 2); batch indices (N,) int32.
        """
        images = tf.cast(images, tf.float32)
        shape = tf.shape(images)
        valid = tf.cast(sizes, tf.float32)

        def inside(boxes, batch):  # the box centre lies inside its image (not in the padding)
            cx = 0.5 * (boxes[:, 0] + boxes[:, 2])
            cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
            hw = tf.gather(valid, batch)
            return (cx >= 0) & (cy >= 0) & (cx < hw[:, 1]) & (cy < hw[:, 0])

        # P-Net over the pyramid, then NMS across scales.
        boxes, scores, batch = self._pnet_stage(images)
        keep = tf.where(inside(boxes, batch))[:, 0]
        boxes, scores, batch = tf.gather(boxes, keep), tf.gather(scores, keep), tf.gather(batch, keep)
        keep = self._nms(boxes, scores, batch, shape, self.nms_thresholds[1])
        boxes, batch = _square(tf.gather(boxes, keep)), tf.gather(batch, keep)

        # R-Net.
        offsets, probs = self._run_on_patches(self.rnet, images, boxes, batch, 24)
        scores = probs[:, 1]
        keep = tf.where(scores > self.thresholds[1])[:, 0]
        boxes = _regress(tf.gather(boxes, keep), tf.gather(offsets, keep))
        scores, batch = tf.gather(scores, keep), tf.gather(batch, keep)
        keep = self._nms(boxes, scores, batch, shape, self.nms_thresholds[2])
        boxes, batch = _square(tf.gather(boxes, keep)), tf.gather(batch, keep)

        # O-Net.
        offsets, marks, probs = self._run_on_patches(self.onet, images, boxes, batch, 48)
        scores = probs[:, 1]
        keep = tf.where(scores > self.thresholds[2])[:, 0]
        boxes, offsets, marks = tf.gather(boxes, keep), tf.gather(offsets, keep), tf.gather(marks, keep)
        scores, batch = tf.gather(scores, keep), tf.gather(batch, keep)
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1.0
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1.0
        landmarks = tf.stack([w * marks[:, :5] + boxes[:, 0:1] - 1.0,
                              h * marks[:, 5:] + boxes[:, 1:2] - 1.0], axis=2)
        boxes = _regress(boxes, offsets)
        keep = self._nms(boxes, scores, batch, shape, self.nms_thresholds[3], smaller=True)
        keep = tf.gather(keep, tf.where(inside(tf.gather(boxes, keep), tf.gather(batch, keep)))[:, 0])
        boxes = tf.concat([tf.gather(boxes, keep), tf.gather(scores, keep)[:, None]], axis=1)
        return boxes, tf.gather(landmarks, keep), tf.gather(batch, keep)

    def detect_image_graph(self, image: tf.Tensor):
        """One uint8 (H, W, 3) RGB image -> boxes (N, 5), landmarks (N, 5, 2); graph-friendly."""
        boxes, landmarks, _ = self.detect_batch_graph(image[None], tf.shape(image)[None, :2])
        return boxes, landmarks

    def detect_and_align_graph(self, image: tf.Tensor, alignment: str = "arcface",
                               image_size: int | Sequence[int] | None = None, margin: float = 32):
        """Photo -> aligned faces, in-graph (the front end of a photo -> embedding SavedModel).

        Args:
            image: uint8 (H, W, 3) RGB.
            alignment: ``"arcface"`` / ``"sphereface"`` (5-point similarity, see
                :func:`tfface_align.align_tf`) or ``"facenet_crop"`` (:func:`tfface_align.crop_tf`).
            image_size: output size; default the template's, or 160 for facenet_crop.
            margin: facenet_crop margin in pixels.

        Returns:
            faces float32 (N, h, w, 3) in [0, 255], boxes (N, 5), landmarks (N, 5, 2).
        """
        from tfface_align.transform import align_tf, crop_tf

        boxes, landmarks = self.detect_image_graph(image)
        if alignment == "facenet_crop":
            faces = crop_tf(image, boxes, margin, image_size or 160)
        else:
            faces = align_tf(image, landmarks, alignment, image_size)
        return faces, boxes, landmarks

    def as_module(self) -> tf.Module:
        """A ``tf.Module`` holding the nets with a ``detect`` function of fixed signature
        (uint8 [H, W, 3] -> {"boxes": (N, 5), "landmarks": (N, 5, 2)}); save it with
        ``tf.saved_model.save(module, path, signatures={"serving_default": module.detect})``."""
        module = tf.Module()
        module.pnet, module.rnet, module.onet = self.pnet, self.rnet, self.onet

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")])
        def detect(image):
            boxes, landmarks = self.detect_image_graph(image)
            return {"boxes": boxes, "landmarks": landmarks}

        module.detect = detect
        return module

    # ------------------------------------------------------------------ NumPy API
    def _buckets(self, shapes: list[tuple[int, int]]) -> list[list[int]]:
        """Groups image indices into padded batches: sorted by size, a batch grows while padding
        is at most ``max_padding`` of its pixels and it stays under the batch limits."""
        order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0] * shapes[i][1], shapes[i]))
        buckets: list[list[int]] = []
        current: list[int] = []
        for i in order:
            trial = current + [i]
            h = max(shapes[j][0] for j in trial)
            w = max(shapes[j][1] for j in trial)
            real = sum(shapes[j][0] * shapes[j][1] for j in trial)
            padded = h * w * len(trial)
            if current and (len(trial) > self.batch_size or padded > self.max_batch_pixels
                            or real < (1.0 - self.max_padding) * padded):
                buckets.append(current)
                trial = [i]
            current = trial
        if current:
            buckets.append(current)
        return buckets

    def detect(self, images) -> Faces | list[Faces]:
        """Detects faces.

        Args:
            images: one image (uint8 RGB array (H, W, 3) or (H, W), a path, or encoded bytes), a
                batch array (B, H, W, 3), or a list of images of any sizes. Files are decoded with
                their EXIF orientation applied.

        Returns:
            :class:`Faces` for one image, else a list of them in input order.
        """
        single = isinstance(images, (str, bytes)) or (
            not isinstance(images, (list, tuple)) and np.ndim(images) in (2, 3))
        if single:
            batch = [images]
        elif isinstance(images, (list, tuple)):
            batch = list(images)
        else:
            batch = list(np.asarray(images))
        arrays = [read_image(x) if isinstance(x, (str, bytes)) else to_rgb_uint8(np.asarray(x)) for x in batch]
        results: list[Faces | None] = [None] * len(arrays)
        for bucket in self._buckets([a.shape[:2] for a in arrays]):
            h = max(arrays[i].shape[0] for i in bucket)
            w = max(arrays[i].shape[1] for i in bucket)
            if len(bucket) == 1:
                stacked = arrays[bucket[0]][None]
            elif all(arrays[i].shape[:2] == (h, w) for i in bucket):
                stacked = np.stack([arrays[i] for i in bucket])
            else:
                stacked = np.full((len(bucket), h, w, 3), 127, np.uint8)  # grey: 0 once normalised
                for row, i in enumerate(bucket):
                    stacked[row, :arrays[i].shape[0], :arrays[i].shape[1]] = arrays[i]
            sizes = np.array([arrays[i].shape[:2] for i in bucket], np.int32)
            boxes, landmarks, index = (t.numpy() for t in self._batch_fn(stacked, sizes))
            for row, i in enumerate(bucket):
                mine = index == row
                results[i] = Faces(boxes[mine], landmarks[mine])
        return results[0] if single else results
