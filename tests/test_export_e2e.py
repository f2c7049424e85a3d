"""The photo -> faces -> embeddings SavedModel against the Python path on real photos."""
import os

import numpy as np
import pytest
import tensorflow as tf

import tfface_align
from tests.test_export import warm_embedder
from tfface.core.errors import UserError
from tfface.export import export_saved_model, warmup
from tfface.export.end_to_end import aligned_faces, export_end_to_end
from tfface.export.sources import make_alignment
from tfface.export.tf1_check import check_in_fresh_process
from tfface.core.images import load, resize
from tfface.recognition.inference import PhotoEmbedder, load_embedder

PHOTOS = ("img12.jpg", "img25.jpg", "img5.jpg", "img16.jpg")  # the smallest photos of testdata/faces
MIN_FACE = 40


@pytest.fixture(scope="module")
def exports(tmp_path_factory, faces_dir):
    base = str(tmp_path_factory.mktemp("export"))
    embedder = warm_embedder("sphereface20", (32, 32), 16)
    detector = tfface_align.MTCNN(min_face_size=MIN_FACE)
    alignment = make_alignment("arcface", 64)  # aligned at 64x64, resized to the model's 32x32 in the graph
    photos = export_end_to_end(embedder, base, "photos", alignment, max_faces=3, detector=detector,
                               warmup_batch_sizes=(1,))
    faces = export_saved_model(embedder, base, "faces", alignment=alignment, warmup_batch_sizes=(1,))
    paths = [os.path.join(faces_dir, name) for name in PHOTOS]
    return photos, faces, detector, alignment, paths, embedder


def python_path(detector, embedder, alignment, path):
    """tfface_align.MTCNN.detect + tfface_align.align + Embedder.embed (image contract resize)."""
    image = load(path)
    found = detector.detect(image)
    faces = [resize(tfface_align.align(image, marks, alignment["align"], alignment["image_size"]), embedder.image_size)
             for marks in found.landmarks]
    embeddings = embedder.embed(np.stack(faces)) if faces else np.zeros((0, 16), np.float32)
    return found, embeddings


def test_photo_model_matches_the_python_path(exports):
    photos, faces, detector, alignment, paths, _ = exports
    model = load_embedder(photos)
    assert isinstance(model, PhotoEmbedder) and model.alignment == alignment
    assert model.fingerprint == load_embedder(faces).fingerprint  # the same embedder inside
    served = model.embed_photos(paths)
    embedder = load_embedder(faces)
    cosines, box_errors, total = [], [], 0
    for path, result in zip(paths, served):
        found, expected = python_path(detector, embedder, alignment, path)
        count = min(len(found.boxes), 3)
        total += count
        assert len(result["boxes"]) == count, path
        box_errors.append(np.abs(result["boxes"] - found.boxes[:count, :4]).max(initial=0))
        np.testing.assert_allclose(result["scores"], found.boxes[:count, 4], atol=1e-4)
        np.testing.assert_allclose(result["landmarks"], found.landmarks[:count], atol=0.05)
        cosines.extend((result["embeddings"] * expected[:count]).sum(1))
    assert total >= len(paths)  # every photo has a face
    print(f"\nend-to-end vs Python path: {total} faces, min cosine {min(cosines):.6f}, "
          f"max box difference {max(box_errors):.4f} px")
    assert min(cosines) >= 0.999 and max(box_errors) < 0.05


def test_photo_model_runs_under_the_tf1_loader(exports):
    photos, _, _, _, paths, _ = exports
    data = np.array([open(paths[1], "rb").read()], dtype=object)
    ((name, outputs),) = check_in_fresh_process(photos, [("serving_default", {"image_bytes": data})])
    expected = {k: v.numpy() for k, v in tf.saved_model.load(photos).signatures[name](image_bytes=tf.constant(data)).items()}
    assert set(outputs) == {"boxes", "scores", "landmarks", "embeddings", "num_faces"}
    assert outputs["embeddings"].shape == (1, 3, 16) and outputs["num_faces"].tolist() == [1]
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, atol=1e-4, err_msg=key)
    # The warm-up photo has no face: every row is padding.
    ((_, inputs),) = warmup.read_requests(photos)
    blank = tf.saved_model.load(photos).signatures["serving_default"](image_bytes=tf.constant(inputs["image_bytes"]))
    assert blank["num_faces"].numpy().tolist() == [0] and not blank["embeddings"].numpy().any()


def test_bad_photos_fail_clearly(exports, tmp_path):
    photos, _, _, _, _, embedder = exports
    (tmp_path / "notes.jpg").write_bytes(b"not a photo at all")
    with pytest.raises(UserError, match="notes.jpg"):
        load_embedder(photos).embed_photos([str(tmp_path / "notes.jpg")])
    run = tf.saved_model.load(photos).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes: an element is not a JPEG/PNG/GIF/BMP image"):
        run(image_bytes=tf.constant([b"not a photo at all"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes: empty batch"):
        run(image_bytes=tf.constant([], tf.string))
    with pytest.raises(UserError, match="alignment is unknown"):
        export_end_to_end(embedder, str(tmp_path), "photos", None)
    with pytest.raises(UserError, match="--max_faces"):
        export_end_to_end(embedder, str(tmp_path), "photos", make_alignment("arcface", 112), max_faces=0)


@pytest.mark.parametrize("align, size, margin", [("sphereface", (56, 48), 0.0), ("facenet_crop", (40, 40), 16.0)])
def test_in_graph_alignment_equals_tfface_align(faces_dir, align, size, margin):
    """The graph's alignment step equals tfface_align.align / crop (uint8, within one level)."""
    image = load(os.path.join(faces_dir, PHOTOS[0]))
    found = tfface_align.MTCNN(min_face_size=MIN_FACE).detect(image)
    alignment = make_alignment(align, size, margin)
    graph = aligned_faces(tf.constant(image), tf.constant(found.boxes), tf.constant(found.landmarks), alignment).numpy()
    for i in range(len(found.boxes)):
        if align == "facenet_crop":
            expected = tfface_align.crop(image, found.boxes[i], margin, size)
        else:
            expected = tfface_align.align(image, found.landmarks[i], align, size)
        assert graph[i].shape == expected.shape
        assert np.abs(graph[i].astype(int) - expected).max() <= 1
