import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import tfface_align
from tfface.core.errors import UserError
from tfface.recognition.facebank import UNKNOWN, FaceBank, model_threshold
from tfface.recognition.inference import load_embedder
from tfface.recognition.faces import embed_photos
from tfface.recognition.video import Recognizer, enrolment_frame, open_capture, process_video, released
from tests import facebank_model as fm

HEIGHT, WIDTH = 480, 640


def face(orl_dir, person, photo, scale=2, blur=0.0):
    image = cv2.imread(fm.orl_path(orl_dir, person, photo))
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(image, (0, 0), blur) if blur else image


def frame(*placed):
    """A 640x480 BGR frame with photos pasted at (x, y) top-left corners."""
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    for image, (x, y) in placed:
        canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
    return canvas


def write_video(path, frames, fps=10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for image in frames:
        writer.write(image)
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def setup(orl_dir):
    """The tiny ORL model, a detector and a facebank of s1, s2, s3 (photos 1-5)."""
    return load_embedder(fm.orl_model(orl_dir)), tfface_align.MTCNN(), fm.people_bank(orl_dir)


def scene(orl_dir):
    """24 frames: s1 walking right (2 px a frame) beside a stranger (s27), then s2 walking down.
    Returns the frames and, per frame, the expected (name, face centre x, y) of each face."""
    s1, stranger, s2 = face(orl_dir, 1, 1), face(orl_dir, 27, 1), face(orl_dir, 2, 1)
    frames, truth = [], []
    centre = np.array([s1.shape[1] / 2, s1.shape[0] / 2])
    for t in range(12):
        frames.append(frame((s1, (60 + 2 * t, 120)), (stranger, (400, 120))))
        truth.append([("s1", *(centre + (60 + 2 * t, 120))), (UNKNOWN, *(centre + (400, 120)))])
    for t in range(12):
        frames.append(frame((s2, (220, 100 + t))))
        truth.append([("s2", *(centre + (220, 100 + t)))])
    return frames, truth


def check_log(log, truth, every_n_frames):
    assert [entry["frame"] for entry in log] == list(range(len(truth)))
    for entry, expected in zip(log, truth):
        assert entry["keyframe"] == (entry["frame"] % every_n_frames == 0)
        faces = sorted(entry["faces"], key=lambda f: f["box"][0])
        assert len(faces) == len(expected), entry
        for got, (name, cx, cy) in zip(faces, expected):
            x1, y1, x2, y2 = got["box"]
            # The face is where the photo was pasted (tracked frames follow it too).
            assert abs((x1 + x2) / 2 - cx) < 25 and abs((y1 + y2) / 2 - cy) < 35, (entry, cx, cy)
            assert got["name"] == name, entry


def test_infer_on_video_cli_writes_names_boxes_and_video(orl_dir, setup, tmp_path):
    model, _, bank = setup
    frames, truth = scene(orl_dir)
    source = write_video(tmp_path / "in.mp4", frames)
    out = subprocess.run(
        [sys.executable, "-m", "tfface.infer_on_video", "-f", source, "-s", str(tmp_path / "out.mp4"),
         "--facebank", bank, "--model", model.path, "--log_json", str(tmp_path / "log.json"),
         "--every_n_frames", "3", "--batch_size", "4"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["frames"] == 24 and log["frames_per_second"] > 0 and log["names"] == sorted(["s1", "s2", UNKNOWN])
    check_log(log["per_frame"], truth, every_n_frames=3)
    # Tracked boxes move with the face between key frames.
    xs = [min(np.mean(face["box"][0::2]) for face in f["faces"]) for f in log["per_frame"][:3]]
    assert 1 < xs[1] - xs[0] < 4 and 3 < xs[2] - xs[0] < 6
    written = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    ok, first = written.read()
    assert ok and first.shape == (HEIGHT, WIDTH, 3)
    assert (np.abs(first.astype(int) - frames[0]).sum(axis=2) > 150).sum() > 500  # boxes and labels drawn
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp")] == []


class FakeCamera:
    """A live camera as OpenCV reports one (no frame count, no frame rate), fed from a video file."""

    def __init__(self, path):
        self.capture = open_capture(path)

    def read(self):
        return self.capture.read()

    def get(self, prop):
        return 0.0

    def release(self):
        self.capture.release()


def test_camera_mode_with_a_fake_camera(orl_dir, setup, tmp_path):
    model, detector, bank = setup
    frames, truth = scene(orl_dir)
    source = write_video(tmp_path / "camera.mp4", frames[:14])
    threshold, metric, _ = model_threshold(model)
    recognizer = Recognizer(model, FaceBank.load(bank, model), threshold, metric, detector)
    with released(FakeCamera(source)) as camera:  # the CLI's --camera path: one frame at a time, unknown length
        summary = process_video(camera, recognizer, save=str(tmp_path / "cam.avi"),
                                log_json=str(tmp_path / "cam.json"), batch_size=1, progress=False)
    check_log(json.loads((tmp_path / "cam.json").read_text())["per_frame"], truth[:14], every_n_frames=1)
    assert summary["frames"] == 14 and os.path.getsize(tmp_path / "cam.avi") > 0
    with released(FakeCamera(source)) as camera, pytest.raises(UserError, match="no GUI.*--no_display"):
        process_video(camera, recognizer, display=True, progress=False)

    with pytest.raises(UserError, match="camera 9: cannot be opened"):
        open_capture(9)
    with pytest.raises(UserError, match="camera /dev/video9: cannot be opened"):
        open_capture("/dev/video9")


def test_enrolment_from_camera(orl_dir, setup, tmp_path):
    model, detector, bank = setup
    s4 = face(orl_dir, 4, 1)
    frames = [frame(),                                                   # nobody
              frame((s4, (60, 100)), (face(orl_dir, 5, 1), (380, 100))),  # two people
              frame((face(orl_dir, 4, 1, scale=1), (300, 200))),         # too small
              frame((face(orl_dir, 4, 1, blur=4.0), (220, 100))),        # blurred
              frame((s4, (220, 100))),                                   # enrol this one
              frame((face(orl_dir, 4, 2), (220, 100)))]
    source = write_video(tmp_path / "enrol.mp4", frames)
    verdicts = []
    with released(FakeCamera(source)) as camera:
        image, index = enrolment_frame(camera, detector, on_frame=lambda i, why: verdicts.append(why))
    assert index == 4 and verdicts[:2] == ["0 faces", "2 faces"]
    assert verdicts[2].startswith("face too small") and verdicts[3].startswith("blurred")

    mine = tmp_path / "bank"
    shutil.copytree(bank, mine)
    out = subprocess.run([sys.executable, "-m", "tfface.facebank", "add", "s4", "--from_camera", source,
                          "--facebank", str(mine), "--model", model.path], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    enrolled = FaceBank.load(str(mine), model)
    assert enrolled.names == ["s1", "s2", "s3", "s4"] and enrolled.counts[-1] == 1
    np.testing.assert_allclose(enrolled.centres[-1], embed_photos(model, detector, [image]).embeddings[0], atol=1e-4)
    np.testing.assert_array_equal(enrolled.sums[:3], FaceBank.load(bank).sums)

    with released(FakeCamera(write_video(tmp_path / "empty.mp4", frames[:2]))) as camera:
        with pytest.raises(UserError, match="no frame among the first 2 held a single, large"):
            enrolment_frame(camera, detector, max_frames=2)
