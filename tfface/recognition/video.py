"""Recognising a facebank's people in video files and camera streams (MultiFace's
``infer_on_video`` and ``face_verify``), and enrolling a person from a camera (``take_pic``).

    recognizer = Recognizer(embedder, FaceBank.load("facebank/", embedder), threshold=1.1)
    with open_capture("in.mp4") as capture:
        for frame in recognize_stream(capture, recognizer, every_n_frames=3):
            ...   # frame.index, frame.image (BGR), frame.faces: [Face(box, score, name, distance)]

Detection, alignment and embedding run batched over frames; with ``every_n_frames`` k > 1 only
every k-th frame is detected and recognised, and the boxes follow the faces in between by
optical flow (each box moves with the median motion of the corners inside it).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from typing import Callable, Iterator, NamedTuple, Sequence

import cv2
import numpy as np

import tfface_align
from tfface.data.tfrecord import write_json_atomic
from tfface.core.errors import UserError, check_positive
from tfface.recognition.annotate import draw_faces
from tfface.recognition.facebank import FaceBank, beyond_threshold
from tfface.recognition.inference import Embedder
from tfface.recognition.faces import aligned_faces, embed_faces_with_quality

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class Face(NamedTuple):
    """A face in a frame: ``box`` (x1, y1, x2, y2) pixels, detector ``score``, ``name`` (or
    ``Unknown``) and ``distance`` to that person's facebank embedding, the face's ``quality``
    score (NaN for a model without a quality output) and ``candidates``: the (name, distance) of
    the nearest people after the first, when asked for (``top_k``)."""

    box: tuple[float, float, float, float]
    score: float
    name: str
    distance: float
    quality: float = float("nan")
    candidates: tuple[tuple[str, float], ...] = ()

    def as_json(self) -> dict:
        out = {"name": self.name, "distance": round(float(self.distance), 5),
               "box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 4)}
        if np.isfinite(self.quality):
            out["quality"] = round(float(self.quality), 4)
        return out


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height
    return width * height / union if union > 0 else 0.0


class BestFrames:
    """Tracks faces over key frames (a box overlapping the track's last box by IoU >= ``min_iou``)
    and keeps each track's ``count`` best-quality embeddings: a face is recognised from the
    re-normalised sum of those, not from the current frame alone (a blurred or turned frame then
    borrows the identity of the track's sharp frames). A track not seen in a key frame ends."""

    def __init__(self, count: int, min_iou: float = 0.3):
        self.count, self.min_iou = int(count), float(min_iou)
        self.tracks: list[tuple[tuple, list[tuple[float, np.ndarray]]]] = []

    def update(self, boxes: Sequence[Sequence[float]], embeddings: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """One key frame's faces -> the embeddings (N, D) to recognise them by."""
        tracks, free, out = [], list(self.tracks), []
        for box, embedding, score in zip(boxes, embeddings, quality):
            overlaps = [box_iou(box, last) for last, _ in free]
            best = int(np.argmax(overlaps)) if overlaps else -1
            kept = free.pop(best)[1] if best >= 0 and overlaps[best] >= self.min_iou else []
            kept = sorted(kept + [(float(score), embedding)], key=lambda item: -item[0])[: self.count]
            tracks.append((tuple(box), kept))
            total = np.sum([e for _, e in kept], axis=0)
            out.append(total / max(float(np.linalg.norm(total)), 1e-12))
        self.tracks = tracks
        return np.asarray(out, np.float32) if out else np.asarray(embeddings, np.float32)[:0]


class Frame(NamedTuple):
    """One frame of a stream: ``image`` BGR uint8, whether it was a detection ``keyframe``."""

    index: int
    image: np.ndarray
    faces: list[Face]
    keyframe: bool


class Recognizer:
    """Faces in frames -> names: MTCNN (batched), alignment per the model, embedding, facebank.

    Args:
        embedder: the exported model the facebank was built with.
        bank: the facebank.
        threshold: distance beyond which a face is ``Unknown`` (None: always the nearest person).
        distance_metric: 0 squared Euclidean, 1 angular (as the threshold was calibrated).
        detector: the face detector (default ``tfface_align.MTCNN()``).
        flip: embed each face with its mirror image too (slower, a little more accurate).
        best_frames: > 0 recognises a tracked face from its ``best_frames`` best-quality key
            frames so far (:class:`BestFrames`; the model needs a quality output).
        top_k: also keep the next ``top_k - 1`` nearest people of each face (``Face.candidates``).
    """

    def __init__(self, embedder: Embedder, bank: FaceBank, threshold: float | None, distance_metric: int = 0,
                 detector: tfface_align.MTCNN | None = None, flip: bool = False, best_frames: int = 0,
                 top_k: int = 1):
        bank.check_model(embedder)
        self.embedder, self.bank, self.threshold, self.distance_metric = embedder, bank, threshold, distance_metric
        self.detector = detector or tfface_align.MTCNN()
        self.flip, self.top_k = flip, top_k
        if best_frames:
            embedder.check_quality("--best_frames")
        self.best = BestFrames(best_frames) if best_frames > 0 else None

    def recognize(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces of each RGB image; one detector call and one embedding call for all of them."""
        if not images:
            return []
        found = self.detector.detect(list(images))
        aligned = [aligned_faces(self.embedder, image, f.boxes, f.landmarks) for image, f in zip(images, found)]
        embeddings, quality = embed_faces_with_quality(
            self.embedder, np.concatenate([chips for chips, _ in aligned]), self.flip)
        boxes = [tuple(float(v) for v in f.boxes[k, :4]) for f, (_, kept) in zip(found, aligned) for k in kept]
        if self.best is not None:  # frame by frame, in order: the tracks follow the faces
            starts = np.cumsum([0] + [len(kept) for _, kept in aligned])
            embeddings = np.concatenate([self.best.update(boxes[a:b], embeddings[a:b], quality[a:b])
                                         for a, b in zip(starts[:-1], starts[1:])])
        nearest, distances = self.bank.search(embeddings, self.top_k, self.distance_metric)
        names = beyond_threshold([n[0] for n in nearest], distances[:, 0], self.threshold)
        results, start = [], 0
        for f, (_, kept) in zip(found, aligned):
            results.append([Face(boxes[start + i], float(f.boxes[k, 4]), names[start + i], float(distances[start + i, 0]),
                                 float(quality[start + i]),
                                 tuple(zip(nearest[start + i][1:], distances[start + i, 1:].tolist())))
                            for i, k in enumerate(kept)])
            start += len(kept)
        return results


# ---------------------------------------------------------------------------------- sources
def open_capture(source: str | int) -> cv2.VideoCapture:
    """A video file, or a camera: its index (``0``) or a device path / stream URL. A source that
    cannot be opened is a :class:`UserError`, never a hang."""
    text = str(source)
    is_camera = isinstance(source, int) or text.isdigit() or "://" in text or text.startswith("/dev/")
    if not is_camera and not os.path.isfile(text):
        raise UserError(f"video: file '{source}' does not exist")
    capture = cv2.VideoCapture(int(text) if text.isdigit() else text)
    if not capture.isOpened():
        if is_camera:
            raise UserError(f"camera {source}: cannot be opened (no such device, or it is busy)")
        raise UserError(f"video: '{source}' cannot be opened (not a video OpenCV can read)")
    return capture


@contextlib.contextmanager
def released(capture: cv2.VideoCapture) -> Iterator[cv2.VideoCapture]:
    """Releases ``capture`` when the block ends."""
    try:
        yield capture
    finally:
        capture.release()


def read_frames(capture: cv2.VideoCapture, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """BGR frames until the stream ends (or ``max_frames``)."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        count += 1
        yield frame


# ---------------------------------------------------------------------------------- tracking
def track_faces(previous: np.ndarray, current: np.ndarray, faces: list[Face]) -> list[Face]:
    """Moves each face's box from grey frame ``previous`` to ``current`` by the median optical
    flow (pyramidal Lucas-Kanade) of the corners inside it; a box without trackable corners stays."""
    height, width = current.shape[:2]
    moved = []
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        corners = None
        if x2 - x1 >= 8 and y2 - y1 >= 8:
            corners = cv2.goodFeaturesToTrack(previous[y1:y2, x1:x2], 40, 0.01, 3)
        if corners is None:
            moved.append(face)
            continue
        corners = (corners + np.array([x1, y1], np.float32)).astype(np.float32)
        new, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, corners, None)
        ok = status[:, 0] == 1
        if ok.sum() < 3:
            moved.append(face)
            continue
        dx, dy = np.median((new - corners)[ok].reshape(-1, 2), axis=0)
        box = face.box
        moved.append(face._replace(box=(box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)))
    return moved


def recognize_stream(capture: cv2.VideoCapture, recognizer: Recognizer, every_n_frames: int = 1,
                     batch_size: int = 8, max_frames: int | None = None) -> Iterator[Frame]:
    """Recognised frames of ``capture`` in order; key frames (every ``every_n_frames``-th) are
    recognised ``batch_size`` at a time, the boxes of the frames between are tracked."""
    check_positive(every_n_frames, "every_n_frames")
    check_positive(batch_size, "batch_size")
    frames = read_frames(capture, max_frames)
    index, last_grey, last_faces = 0, None, []
    while True:
        chunk = [frame for _, frame in zip(range(batch_size * every_n_frames), frames)]
        if not chunk:
            return
        keys = [k for k in range(len(chunk)) if (index + k) % every_n_frames == 0]
        recognised = dict(zip(keys, recognizer.recognize([cv2.cvtColor(chunk[k], cv2.COLOR_BGR2RGB) for k in keys])))
        for k, image in enumerate(chunk):
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            if k in recognised:
                faces = recognised[k]
            else:
                faces = track_faces(last_grey, grey, last_faces) if last_grey is not None else []
            yield Frame(index, image, faces, k in recognised)
            index, last_grey, last_faces = index + 1, grey, faces


# ---------------------------------------------------------------------------------- outputs
class VideoOutput:
    """A ``cv2.VideoWriter`` into a temporary file that becomes ``path`` when closed (atomic)."""

    def __init__(self, path: str, fps: float, size: tuple[int, int]):
        extension = os.path.splitext(path)[1].lower()
        if extension not in FOURCC:
            raise UserError(f"save: '{path}' should end with one of {sorted(FOURCC)}")
        self.path = path
        self.tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{uuid.uuid4().hex[:8]}{extension}")
        self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*FOURCC[extension]), fps, size)
        if not self.writer.isOpened():
            raise UserError(f"save: cannot write a video to '{path}'")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)

    def close(self, keep: bool = True) -> None:
        self.writer.release()
        if keep:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


class Progress:
    """``frames done[/total], frames/s, faces`` on stderr, at most twice a second."""

    def __init__(self, total: int | None, enabled: bool = True, stream=sys.stderr):
        self.total, self.enabled, self.stream = total, enabled, stream
        self.start = self.last = time.perf_counter()
        self.frames = self.faces = 0

    @property
    def rate(self) -> float:
        return self.frames / max(time.perf_counter() - self.start, 1e-9)

    def update(self, faces: int, final: bool = False) -> None:
        self.frames += 0 if final else 1
        self.faces += faces
        now = time.perf_counter()
        if self.enabled and (final or now - self.last > 0.5):
            self.last = now
            of = f"/{self.total}" if self.total else ""
            self.stream.write(f"\r{self.frames}{of} frames, {self.rate:.1f} frames/s, {self.faces} faces ")
            self.stream.write("\n" if final else "")
            self.stream.flush()


# ---------------------------------------------------------------------------------- enrolment
def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a grey face resized to 112x112 (low = blurred)."""
    face = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(face, cv2.CV_64F).var())


def enrolment_frame(capture: cv2.VideoCapture, detector: tfface_align.MTCNN, min_face_fraction: float = 0.2,
                    min_sharpness: float = 100.0, max_frames: int = 300,
                    on_frame: Callable[[int, str], None] | None = None) -> tuple[np.ndarray, int]:
    """The first frame (RGB) holding exactly one face, whose box side is at least
    ``min_face_fraction`` of the frame's shorter side and whose :func:`sharpness` reaches
    ``min_sharpness`` (MultiFace's ``take_pic``, without pressing a key), and its index.
    ``on_frame(index, verdict)`` is told why each frame was passed over."""
    for index, frame in enumerate(read_frames(capture, max_frames)):
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        boxes = detector.detect(image).boxes
        verdict = _enrolment_verdict(frame, boxes, min_face_fraction, min_sharpness)
        if on_frame:
            on_frame(index, verdict)
        if verdict == "ok":
            return image, index
    raise UserError(f"camera: no frame among the first {max_frames} held a single, large (side >= "
                    f"{min_face_fraction:.0%} of the frame), sharp (>= {min_sharpness:g}) face")


def _enrolment_verdict(frame: np.ndarray, boxes: np.ndarray, min_face_fraction: float, min_sharpness: float) -> str:
    if len(boxes) != 1:
        return f"{len(boxes)} faces"
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in boxes[0, :4])
    side = min(x2 - x1, y2 - y1)
    if side < min_face_fraction * min(height, width):
        return f"face too small ({side} px)"
    region = cv2.cvtColor(frame[max(y1, 0):max(y2, 1), max(x1, 0):max(x2, 1)], cv2.COLOR_BGR2GRAY)
    score = sharpness(region) if region.size else 0.0
    return "ok" if score >= min_sharpness else f"blurred (sharpness {score:.0f})"


# ---------------------------------------------------------------------------------- the whole job
def show(image: np.ndarray) -> bool:
    """Shows a frame; False when the user pressed ``q``. A :class:`UserError` without a GUI."""
    try:
        cv2.imshow("tfface", image)
        return (cv2.waitKey(1) & 0xFF) != ord("q")
    except cv2.error:
        raise UserError("display: this OpenCV has no GUI (opencv-python-headless); use --no_display") from None


def process_video(capture: cv2.VideoCapture, recognizer: Recognizer, save: str | None = None,
                  log_json: str | None = None, every_n_frames: int = 1, batch_size: int = 8,
                  max_frames: int | None = None, display: bool = False, progress: bool = True) -> dict:
    """Recognises a stream; writes the annotated video to ``save`` and per-frame names, boxes and
    distances to ``log_json`` (both atomically, also when interrupted with Ctrl-C); returns the
    summary written to the log (``frames``, ``frames_per_second``, ``names``...)."""
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    total = min(total, max_frames) if total and max_frames else total or max_frames
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    bar = Progress(total if total and total > 0 else None, progress)
    output, log, interrupted = None, [], False
    try:
        for frame in recognize_stream(capture, recognizer, every_n_frames, batch_size, max_frames):
            log.append({"frame": frame.index, "keyframe": frame.keyframe, "faces": [f.as_json() for f in frame.faces]})
            bar.update(len(frame.faces))
            if save or display:
                draw_faces(frame.image, frame.faces)
            if save:
                if output is None:
                    output = VideoOutput(save, fps if 0 < fps < 1000 else 25.0, frame.image.shape[1::-1])
                output.write(frame.image)
            if display and not show(frame.image):
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if output is not None:
            output.close(keep=sys.exc_info()[0] is None)  # an error drops the partial video
    bar.update(0, final=True)
    summary = {"frames": len(log), "frames_per_second": round(bar.rate, 2), "every_n_frames": every_n_frames,
               "threshold": recognizer.threshold, "distance_metric": recognizer.distance_metric,
               "names": sorted({f["name"] for entry in log for f in entry["faces"]}), "interrupted": interrupted}
    if log_json:
        write_json_atomic(log_json, {**summary, "per_frame": log})
    return summary
