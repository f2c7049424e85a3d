"""SphereFace-20 and SeqFace ResNet-27 Caffe models: files written in the real formats (V1 and
V2 layers, binaryproto mean), imported exactly (parity with a PyTorch forward pass of the deploy
description), refused in one line when they do not fit, exported and served."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.importers import caffe_files as cf
from tfface.core.errors import UserError
from tfface.importers import import_file
from tfface.importers.caffe_proto import read_blob, read_net

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
PHOTOS = ("img12.jpg", "img25.jpg", "img5.jpg", "img16.jpg")
MODELS = {  # test name -> (description, net input, seed)
    "sphereface20": (cf.sphereface20, (112, 96), 20),
    "seqface_resnet27": (cf.resnet27, (112, 96), 27),
}


@pytest.fixture(scope="session")
def caffe_dir(tmp_path_factory):
    """For each model: its V1 and V2 .caffemodel (the same seeded weights), its description and
    blobs; SeqFace's mean.binaryproto (BGR, 3 x 112 x 96)."""
    root = tmp_path_factory.mktemp("caffe")
    nets = {}
    for name, (describe, size, seed) in MODELS.items():
        layers = describe()
        blobs = cf.random_blobs(layers, size, seed)
        for version in ("V1", "V2"):
            # the V2 file declares its input like a deploy net, the V1 one like a train snapshot
            (root / f"{name}_{version}.caffemodel").write_bytes(
                cf.caffemodel(name, layers, blobs, version, size if version == "V2" else None))
        nets[name] = (layers, blobs)
    mean = np.random.default_rng(3).uniform(60, 180, (3, 112, 96)).astype(np.float32)
    (root / "mean.binaryproto").write_bytes(cf.mean_binaryproto(mean))
    return root, nets, mean


@pytest.fixture(scope="session")
def face_pixels(faces_dir) -> dict[tuple[int, int], np.ndarray]:
    """Real faces (RGB uint8): the central square of 4 photos, at 112x96 and 144x144."""
    crops = []
    for name in PHOTOS:
        image = cv2.cvtColor(cv2.imread(os.path.join(faces_dir, name)), cv2.COLOR_BGR2RGB)
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        crops.append(image[top:top + side, left:left + side])
    return {size: np.stack([cv2.resize(c, size[::-1], interpolation=cv2.INTER_AREA) for c in crops])
            for size in ((112, 96), (144, 144))}


def _reference(name, caffe_dir, face_pixels) -> np.ndarray:
    """fc5 of the deploy description on Caffe's input: BGR, SphereFace (x - 127.5) / 128; SeqFace
    centre crop of the 144x144 face, minus the mean, times 0.0078125."""
    _, nets, mean = caffe_dir
    layers, blobs = nets[name]
    if name == "sphereface20":
        data = (face_pixels[(112, 96)][..., ::-1].astype(np.float64) - 127.5) / 128.0
    else:
        crop = face_pixels[(144, 144)][:, 16:128, 24:120, ::-1].astype(np.float64)
        data = (crop - mean.transpose(1, 2, 0)) * 0.0078125
    return cf.torch_forward(layers, blobs, data.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("version", ["V2", "V1"])
@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_the_caffe_forward_pass_on_real_faces(caffe_dir, face_pixels, name, version):
    root, _, _ = caffe_dir
    path = root / f"{name}_{version}.caffemodel"
    mean = {"mean": str(root / "mean.binaryproto")} if name.startswith("seqface") else {}
    imported = import_file(str(path), **mean)  # the architecture is told from the file
    pixels = face_pixels[(112, 96) if name == "sphereface20" else (144, 144)]
    ours = imported.embedder(pixels.astype(np.float32), training=False).numpy()
    reference = _reference(name, caffe_dir, face_pixels)
    assert ours.shape == reference.shape == (len(PHOTOS), 512)
    diff = float(np.abs(ours - reference).max())
    print(f"{name} {version}: max |fc5 - reference| = {diff:.2e} (features up to {np.abs(reference).max():.2f})")
    assert diff <= 1e-4
    if (name, version) == ("sphereface20", "V2"):  # the served function (SavedModel = this graph) in TFLite
        from tfface.export import tflite

        cosine = _cosine(ours, tflite.run_tflite(tflite.convert(imported.embedder, "float32"), pixels))
        print(f"{name}: TFLite float32 cosine vs the embedder >= {cosine.min():.7f}")
        assert cosine.min() >= 0.9999
    source = imported.source
    assert source["arch"] == name and source["format"] == "caffe" and source["caffe_layers"] == version
    assert len(source["sha256"]) == 64 and source["file"] == path.name
    if name == "sphereface20":
        assert imported.alignment == {"align": "sphereface", "image_size": [112, 96], "margin": 0.0}
        assert source["licence"].startswith("MIT")
    else:
        assert imported.alignment == {"align": "seqface", "image_size": [144, 144], "margin": 0.0}
        assert source["licence"].startswith("research only") and len(source["mean"]["sha256"]) == 64


def test_reader_reads_both_layer_forms_and_the_mean(caffe_dir):
    root, nets, mean = caffe_dir
    layers, blobs = nets["sphereface20"]
    v1, v2 = (read_net(str(root / f"sphereface20_{v}.caffemodel")) for v in ("V1", "V2"))
    assert (v1.version, v2.version) == ("V1", "V2")
    assert v2.input_shape == (1, 3, 112, 96) and v1.input_shape is None
    assert [x.type for x in v2.layers[:3]] == ["Data", "Convolution", "PReLU"]
    assert [x.type for x in v1.layers[:3]] == ["Data", "Convolution", "V1:41"]  # no PReLU in the V1 enum
    assert v1.by_name["fc5"].blobs[0].shape == (1, 1, 512, 21504)  # legacy 4-D shapes
    np.testing.assert_array_equal(v2.by_name["conv3_4"].blobs[0], blobs["conv3_4"][0])
    assert list(v2.by_name["conv1_1"].params.stride) == [2] and v2.by_name["res1_3"].params.operation == 1
    np.testing.assert_array_equal(read_blob(str(root / "mean.binaryproto")), mean[None])


def _write_variant(root, name, layers, blobs, filename):
    path = root / filename
    path.write_bytes(cf.caffemodel(name, layers, blobs, "V2"))
    return str(path)


def test_refuses_files_that_do_not_fit(caffe_dir, tmp_path):
    root, nets, _ = caffe_dir
    layers, blobs = nets["sphereface20"]
    sphere = str(root / "sphereface20_V2.caffemodel")
    cases = []
    lenet = [cf._conv("conv1", "data", 20, 5, 1, 0), {"name": "ip1", "type": "InnerProduct", "bottom": ["conv1"],
                                                       "top": ["ip1"], "fc": 10}]
    other = _write_variant(tmp_path, "LeNet", lenet, cf.random_blobs(lenet, (28, 28), 1), "lenet.caffemodel")
    cases.append(((other, None), "cannot tell the architecture"))
    cases.append(((other, "sphereface20"), "has no layer 'fc5'"))
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes((root / "sphereface20_V2.caffemodel").read_bytes()[: 5_000_000])
    cases.append(((str(truncated), None), "truncated or another format"))
    relu = [dict(x, type="ReLU") if x["name"] == "relu1_2" else x for x in layers]
    cases.append(((_write_variant(tmp_path, "s", relu, blobs, "relu.caffemodel"), None),
                  "layer 4 is ReLU 'relu1_2', sphereface20 expects PReLU 'relu1_2'"))
    slopes = {**blobs, "relu3_2": [blobs["relu3_2"][0][:128]]}
    cases.append(((_write_variant(tmp_path, "s", layers, slopes, "slopes.caffemodel"), None),
                  r"layer 'relu3_2' blob 0 has shape \[128\], expected \[256\]"))
    stride = [dict(x, conv=(128, 3, 1, 1)) if x["name"] == "conv2_1" else x for x in layers]
    cases.append(((_write_variant(tmp_path, "s", stride, blobs, "stride.caffemodel"), None),
                  r"layer 'conv2_1' has \(kernel, stride, pad\) \(3, 1, 1\), sphereface20 expects \(3, 2, 1\)"))
    cases.append(((sphere, "resnet50"), r"--arch: expected one of \['sphereface20'"))
    cases.append(((sphere, "sphereface36"), "expects Convolution 'conv1_4'"))
    cases.append(((str(root / "seqface_resnet27_V2.caffemodel"), None), "--mean: required for seqface_resnet27"))
    for (path, arch), message in cases:
        with pytest.raises(UserError, match=message) as info:
            import_file(path, arch=arch)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("mean_shape", [(1, 1, 112, 96), (2, 3, 112, 96), (3,)])
def test_refuses_a_mean_of_the_wrong_shape(caffe_dir, tmp_path, mean_shape):
    root, _, _ = caffe_dir
    bad = tmp_path / "mean.binaryproto"
    bad.write_bytes(cf.blob(np.ones(mean_shape, np.float32)))
    with pytest.raises(UserError, match=r"--mean: .* holds a blob of shape .* expected \(1, 3, H, W\)"):
        import_file(str(root / "seqface_resnet27_V2.caffemodel"), mean=str(bad))


def test_a_mean_of_another_size_is_resized_like_seqface_does(caffe_dir, tmp_path):
    """SeqFace's Featurer resizes the mean to the net input bilinearly (half-pixel centres)."""
    root, _, _ = caffe_dir
    mean = np.random.default_rng(5).uniform(0, 255, (3, 144, 144)).astype(np.float32)
    (tmp_path / "mean144.binaryproto").write_bytes(cf.mean_binaryproto(mean))
    imported = import_file(str(root / "seqface_resnet27_V2.caffemodel"), mean=str(tmp_path / "mean144.binaryproto"))
    stored = imported.embedder.get_layer("seqface_resnet27").get_layer("mean_image").get_weights()[0] / 0.0078125
    # bilinear by hand: output pixel i samples (i + 0.5) * 144 / n - 0.5
    rows, cols = ((np.arange(n) + 0.5) * 144 / n - 0.5 for n in (112, 96))
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    rgb = mean.transpose(1, 2, 0)[..., ::-1].astype(np.float64)
    expected = ((rgb[r0][:, c0] * (1 - fc) + rgb[r0][:, c0 + 1] * fc) * (1 - fr)
                + (rgb[r0 + 1][:, c0] * (1 - fc) + rgb[r0 + 1][:, c0 + 1] * fc) * fr)
    np.testing.assert_allclose(stored, expected, atol=1e-3)


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def test_export_cli_refuses_in_one_line_and_leaves_no_export(caffe_dir, tmp_path):
    root, _, _ = caffe_dir
    bad_mean = tmp_path / "grey.binaryproto"
    bad_mean.write_bytes(cf.blob(np.ones((1, 1, 112, 96), np.float32)))
    proc = _run("tfface.export", f"--import={root / 'seqface_resnet27_V1.caffemodel'}", f"--mean={bad_mean}",
                f"--export_dir={tmp_path / 'models'}", "--model_name=seqface")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "--mean:" in lines[-1] and "expected (1, 3, H, W)" in lines[-1]
    assert not (tmp_path / "models").exists()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
def test_cli_export_serves_validates_on_photos_and_converts(caffe_dir, face_pixels, faces_dir, tmp_path):
    """SeqFace's V1 file through the export command: TF1 loader check, the served embeddings equal
    the import's on real faces, validate_on_lfw --align cuts the photos with the recorded seqface
    crop, and the TFLite float32 conversion agrees with the SavedModel."""
    from tfface.export import tflite
    from tfface.recognition.inference import load_embedder

    root, _, _ = caffe_dir
    path, mean = root / "seqface_resnet27_V1.caffemodel", root / "mean.binaryproto"
    proc = _run("tfface.export", f"--import={path}", "--arch=seqface_resnet27", f"--mean={mean}",
                f"--export_dir={tmp_path / 'models'}", "--model_name=seqface", "--check")
    assert proc.returncode == 0, proc.stderr[-3000:]
    answered = set(re.findall(r"TF1 loader check: (\w+) ->", proc.stdout))  # every signature, under the TF1 loader
    assert answered == {"serving_default", "embed_encoded", "embed_float", "verify"}
    version = tmp_path / "models" / "seqface" / "1"
    meta = json.loads((version / "assets.extra" / "tfface.json").read_text())
    assert meta["alignment"] == {"align": "seqface", "image_size": [144, 144], "margin": 0.0}
    assert meta["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["source"]["mean"]["sha256"] == hashlib.sha256(mean.read_bytes()).hexdigest()
    assert meta["standardization"] == "scale_1_128" and meta["backbone"] == "seqface_resnet27"

    faces = face_pixels[(144, 144)]
    imported = import_file(str(path), mean=str(mean)).embedder
    expected = imported(faces.astype(np.float32), training=False).numpy()
    served = load_embedder(str(version)).embed(faces)
    np.testing.assert_allclose(served, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    cosine = _cosine(served, tflite.run_tflite(tflite.convert(imported, "float32"), faces))
    print(f"seqface_resnet27: TFLite float32 cosine vs SavedModel >= {cosine.min():.7f}")
    assert cosine.min() >= 0.9999

    photos = tmp_path / "photos"
    photos.mkdir()
    lines = open(os.path.join(faces_dir, "pairs.csv")).read().splitlines()[1:]
    pairs = [x for x in lines if x.endswith(",Yes")][:5] + [x for x in lines if x.endswith(",No")][:5]
    for name in {n for line in pairs for n in line.split(",")[:2]}:
        (photos / name).write_bytes(open(os.path.join(faces_dir, name), "rb").read())
    (photos / "pairs.csv").write_text("file_x,file_y,Decision\n" + "\n".join(pairs) + "\n")
    report = tmp_path / "lfw.json"
    proc = _run("tfface.validate_on_lfw", photos, version, "--align", f"--lfw_pairs={photos / 'pairs.csv'}",
                "--lfw_nrof_folds=2", f"--output_json={report}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(report.read_text())["results"]["photos"]
    evaluated, dropped = (int(v) for v in re.search(r"Pairs: (\d+) evaluated, (\d+) dropped", proc.stdout).groups())
    assert evaluated + dropped == 10 and evaluated >= 6 and result["num_pairs"] == evaluated
