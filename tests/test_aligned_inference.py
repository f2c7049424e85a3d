"""The alignment travels dataset_info.json -> training -> export -> embed_files(align=True)."""
import os
import shutil

import cv2
import numpy as np
import pytest

from tfface.data.tfrecord import alignment_settings
from tfface.core.errors import UserError


def test_alignment_settings_from_dataset_info():
    info = {"alignment": "facenet_crop", "image_size": [36, 36], "margin": 16}
    assert alignment_settings(info) == {"align": "facenet_crop", "image_size": [36, 36], "margin": 16.0}
    assert alignment_settings({"alignment": "arcface", "image_size": [112, 112]}) == {
        "align": "arcface", "image_size": [112, 112], "margin": 0.0}
    assert alignment_settings({"alignment": "none", "image_size": [32, 32]}) is None
    assert alignment_settings({"alignment": "facenet_crop", "image_size": [36, 36]}) is None  # margin unknown


@pytest.fixture(scope="module")
def trained(orl_dir, tmp_path_factory):
    """ORL photos of 2 people aligned into TFRecords (facenet crops, 36 px, margin 16), one
    training step, exported."""
    from tfface.training import TrainConfig, Trainer
    from tfface_align.align_dataset_mtcnn import align_dataset

    root = tmp_path_factory.mktemp("aligned_chain")
    photos = root / "photos"
    for person in ("s21", "s22"):
        os.makedirs(photos / person)
        for n in (1, 2, 3):
            shutil.copy(os.path.join(orl_dir, person, f"{n}.pgm"), photos / person / f"{n}.pgm")
    report = align_dataset(str(photos), str(root / "aligned"), alignment="facenet_crop", image_size=36, margin=16,
                           output_format="both", progress=False)
    assert report["aligned_photos"] == 6
    config = TrainConfig(data_dir=str(root / "aligned"), run_dir=str(root / "run"), model_def="mobilefacenet",
                         image_size=(32, 32), embedding_size=16, head="cosface", head_kwargs={"scale": 16.0},
                         batch_size=4, epoch_size=1, max_nrof_epochs=1, log_every_n_steps=1)
    return root, Trainer(config).train().export_dir


def test_export_records_the_datasets_alignment(trained):
    from tfface.recognition.inference import load_embedder

    embedder = load_embedder(trained[1])
    assert embedder.alignment == {"align": "facenet_crop", "image_size": [36, 36], "margin": 16.0}


def test_embed_files_align_matches_the_aligned_dataset(trained):
    from tfface.recognition.inference import load_embedder

    root, export = trained
    embedder = load_embedder(export)
    raw = [str(root / "photos" / p / f"{n}.pgm") for p in ("s21", "s22") for n in (1, 2, 3)]
    no_face = str(root / "grey.png")
    cv2.imwrite(no_face, np.full((120, 100, 3), 128, np.uint8))
    aligned = [str(root / "aligned" / p / f"{n}.png") for p in ("s21", "s22") for n in (1, 2, 3)]
    got = embedder.embed_files(raw[:3] + [no_face] + raw[3:], align=True)
    expected = embedder.embed_files(aligned)
    assert got.shape == (7, 16)
    assert np.isnan(got[3]).all()  # no face: no embedding of something else
    np.testing.assert_allclose(np.delete(got, 3, axis=0), expected, atol=1e-5)


def test_align_needs_a_recorded_alignment(tmp_path, orl_dir):
    from tfface.export import export_saved_model
    from tfface.recognition.inference import load_embedder
    from tfface.models import build_embedder

    embedder = build_embedder("mobilefacenet", (32, 32), 8)
    plain = export_saved_model(embedder, str(tmp_path), "plain", 1)
    synthetic = export_saved_model(embedder, str(tmp_path), "synthetic", 1,
                                   {"align": "synthetic", "image_size": [32, 32], "margin": 0.0})
    for export, made in ((plain, "unknown alignment"), (synthetic, "made as 'synthetic'")):
        with pytest.raises(UserError, match=f"{made}.*use a model made for real photos"):
            load_embedder(export).embed_files([os.path.join(orl_dir, "s1", "1.pgm")], align=True)
