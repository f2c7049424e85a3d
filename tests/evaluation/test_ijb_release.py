"""The IJB release reader and evaluation on the synthetic mini-release (exact file layout) with
known answers, bad input, and the resumable cache."""
import os
import shutil

import numpy as np
import pytest

from tfface.core.errors import UserError
from tfface.evaluation.ijb import PLAIN, ReleaseEmbeddings, evaluate_release, far_threshold
from tfface.evaluation.ijb_cache import ChunkCache
from tfface.evaluation.ijb_release import read_release
from tfface.evaluation.ijb_templates import Variant


def _faces(truth, noise, seed=0, dim=64, shift=0.0):
    """Per photo: its subject's direction + ``noise`` (or, with noise None, pure noise)."""
    rng = np.random.default_rng(seed)
    n = len(truth.image_subjects)
    if noise is None:
        plain = rng.normal(size=(n, dim))
    else:
        centres = rng.normal(size=(truth.template_subjects.max() + 1, dim))
        plain = centres[truth.image_subjects] + noise * rng.normal(size=(n, dim))
    return ReleaseEmbeddings(plain.astype(np.float32), (plain + shift).astype(np.float32), [])


def test_reads_the_release_layout(ijb_mini):
    root, truth = ijb_mini
    release = read_release(os.path.dirname(root), "IJBC")  # the folder holding IJBC/ works too
    assert release.root == root and len(release.images) == 2000 and len(release.face_images) == 2000
    assert release.landmarks.shape == (2000, 5, 2) and ((release.scores >= 0.5) & (release.scores <= 1)).all()
    assert len(np.unique(release.templates)) == 600 and release.pairs.shape == (60600, 3)
    assert release.pairs[:, 2].sum() == 600 and sorted(release.galleries) == ["G1", "G2"]
    assert len(np.unique(release.probes.templates)) == 400 and (release.face_rows() == np.arange(2000)).all()


def test_zero_noise_gives_tar_and_identification_one(ijb_mini):
    root, truth = ijb_mini
    release = read_release(root, "IJBC")
    results = evaluate_release(release, _faces(truth, 0.0))
    assert len(results.variants) == 8 and results.counts["pairs_dropped"] == 0
    for r in results.variants:
        tar = r.verification
        assert tar.strict_tar.tolist() == [1.0] * 6 and tar.strict_far.max() <= 1e-6
        # the reference rule reads the curve's start (0, 0) where FAR 0 is the nearest point
        assert tar.nearest_tar[tar.nearest_far > 0].tolist() == [1.0] * int((tar.nearest_far > 0).sum())
        assert (tar.nearest_tar[tar.nearest_far == 0] == 0).all() and tar.nearest_tar[-3:].tolist() == [1.0] * 3
        for searched in r.identification.values():
            assert searched.cmc.tolist() == [1.0] * 3 and searched.tpir.tolist() == [1.0, 1.0]
            assert searched.mated == 200 and searched.non_mated == 200


def test_identical_genuine_and_impostor_distributions_give_tar_near_far(ijb_mini):
    root, truth = ijb_mini
    results = evaluate_release(read_release(root, "IJBC"), _faces(truth, None, seed=1))
    for r in results.variants:
        tar = r.verification
        for k, far in enumerate(tar.fars):
            if far >= 1e-2:  # 600 genuine pairs: binomial sd sqrt(far (1 - far) / 600)
                bound = 4 * np.sqrt(far * (1 - far) / 600) + 1 / 600
                assert abs(tar.strict_tar[k] - far) <= bound and abs(tar.nearest_tar[k] - far) <= bound
        for searched in r.identification.values():  # 100 gallery templates: rank-k ~ k / 100
            assert abs(searched.cmc[2] - 0.10) <= 0.09 and searched.cmc[0] <= 0.05


def test_threshold_at_far_is_the_strict_point(ijb_mini):
    root, truth = ijb_mini
    results = evaluate_release(read_release(root, "IJBC"), _faces(truth, 2.0, seed=2))
    threshold = far_threshold(results, 1e-3, "abc")
    plain = next(r for r in results.variants if r.variant == PLAIN).verification
    k = plain.fars.index(1e-3)
    assert threshold.far <= 1e-3 and threshold.value == pytest.approx(2 - 2 * plain.strict_threshold[k])
    assert threshold.tar == plain.strict_tar[k] and 0 < threshold.tar < 1 and threshold.num_pairs == 60600
    unrelated = evaluate_release(read_release(root, "IJBC"), _faces(truth, None, seed=1), [PLAIN], fars=(1e-6,))
    assert unrelated.variants[0].verification.strict_tar[0] == 0  # an impostor pair scores highest
    with pytest.raises(UserError, match="no threshold accepts a genuine IJBC pair at FAR <= 1e-06"):
        far_threshold(unrelated, 1e-6, "abc")


def _copy(root, tmp_path):
    copy = str(tmp_path / "IJBC")
    shutil.copytree(os.path.join(root, "meta"), os.path.join(copy, "meta"))
    return copy


@pytest.mark.parametrize("file, line, text, expected", [
    ("ijbc_face_tid_mid.txt", 5, "5.jpg 12 x\n", r"ijbc_face_tid_mid.txt line 5: expected '<image> <template id>"),
    ("ijbc_name_5pts_score.txt", 3, "3.jpg 1 2 3\n", r"ijbc_name_5pts_score.txt line 3: expected '<image> x1 y1"),
    ("ijbc_template_pair_label.txt", 7, "7 12 2\n", r"ijbc_template_pair_label.txt line 7: expected '<template 1>"),
    ("ijbc_template_pair_label.txt", 2, "7 12.5 1\n", r"ijbc_template_pair_label.txt line 2: expected"),
    ("ijbc_1N_probe_mixed.csv", 4, "x,1,img/1.jpg\n", r"ijbc_1N_probe_mixed.csv line 4: expected 'TEMPLATE_ID"),
])
def test_a_malformed_line_is_named(ijb_mini, tmp_path, file, line, text, expected):
    copy = _copy(ijb_mini[0], tmp_path)
    path = os.path.join(copy, "meta", file)
    with open(path) as f:
        lines = f.readlines()
    lines[line - 1] = text
    with open(path, "w") as f:
        f.writelines(lines)
    with pytest.raises(UserError, match=expected):
        read_release(copy, "IJBC")


def test_missing_files_landmarks_and_photos_are_named_or_counted(ijb_mini, tmp_path):
    root, truth = ijb_mini
    copy = _copy(root, tmp_path)
    with pytest.raises(UserError, match="no meta/ folder"):
        read_release(str(tmp_path), "IJBB")
    os.remove(os.path.join(copy, "meta", "ijbc_1N_gallery_G2.csv"))
    path = os.path.join(copy, "meta", "ijbc_name_5pts_score.txt")
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines(lines[:1990])  # the last 10 photos have no landmarks
    release = read_release(copy, "IJBC")
    assert release.probes is None and release.galleries == {}  # 1:N needs all its files
    faces = _faces(truth, 0.0)
    faces = ReleaseEmbeddings(faces.embeddings[:1990].copy(), faces.mirrored[:1990], ["3.jpg"])
    faces.embeddings[2] = np.nan  # 3.jpg could not be read
    results = evaluate_release(release, faces, [Variant(False, False, False)])
    counts = results.counts
    assert counts["faces_without_landmarks"] == 10 and counts["faces_unreadable"] == 1
    lost = set(np.unique(release.templates)) - set(release.templates[:1990][np.arange(1990) != 2])
    dropped = np.isin(release.pairs[:, :2], list(lost)).any(1).sum()
    assert counts["pairs_dropped"] == dropped and results.variants[0].verification.strict_tar[0] == 1.0
    os.remove(os.path.join(copy, "meta", "ijbc_template_pair_label.txt"))
    with pytest.raises(UserError, match="missing meta file .*ijbc_template_pair_label.txt"):
        read_release(copy, "IJBC")


def test_chunk_cache_resumes_and_refuses_other_settings(tmp_path):
    cache = ChunkCache(str(tmp_path), {"model": "a"}, 10, 4)
    assert cache.missing() == [0, 1, 2] and cache.bounds(2) == (8, 10)
    cache.write(1, np.ones((4, 3)))
    again = ChunkCache(str(tmp_path), {"model": "a"}, 10, 4)
    assert again.missing() == [0, 2]
    again.write(0, np.zeros((4, 3)))
    again.write(2, np.full((2, 3), 2.0))
    assert again.load()[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]
    with pytest.raises(UserError, match=r"other settings \(model differ\)"):
        ChunkCache(str(tmp_path), {"model": "b"}, 10, 4)


def test_aligned_face_warps_the_five_points_and_skips_unreadable_photos(tmp_path):
    import cv2

    from tfface.evaluation.ijb import aligned_face
    from tfface_align.transform import ARCFACE_TEMPLATE

    landmarks = ARCFACE_TEMPLATE * 1.5 + 10  # a face 1.5x the template's size, shifted
    photo = np.zeros((200, 200, 3), np.uint8)
    x, y = np.round(landmarks[0]).astype(int)
    photo[y - 1:y + 2, x - 1:x + 2] = 255  # a white dot on the left eye
    cv2.imwrite(str(tmp_path / "face.png"), photo)
    face = aligned_face(str(tmp_path / "face.png"), landmarks, "arcface", (112, 112))
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8
    row, col = np.unravel_index(np.argmax(face[..., 0]), face.shape[:2])
    assert np.hypot(col - ARCFACE_TEMPLATE[0, 0], row - ARCFACE_TEMPLATE[0, 1]) < 1.5  # the dot lands on the template
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert aligned_face(str(tmp_path / "broken.jpg"), landmarks, "arcface", (112, 112)) is None
    assert aligned_face(str(tmp_path / "absent.jpg"), landmarks, "arcface", (112, 112)) is None
