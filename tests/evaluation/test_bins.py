import os
import pickle

import numpy as np
import pytest

from tfface.core import images
from tfface.core.errors import UserError
from tfface.evaluation import bins


class _Payload:
    """What a hostile .bin carries: unpickling it would create a directory."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def _real_bytes(faces_dir, *names):
    return [open(os.path.join(faces_dir, n), "rb").read() for n in names]


def test_round_trip_keeps_real_jpeg_bytes_and_decodes_like_the_image_contract(faces_dir, orl_dir, tmp_path):
    encoded = _real_bytes(faces_dir, "img1.jpg", "img2.jpg", "img3.jpg", "img20.jpg")
    pgm = open(os.path.join(orl_dir, "s1", "1.pgm"), "rb").read()
    path = str(tmp_path / "faces.bin")
    bins.write_bin(path, encoded + [pgm, encoded[0]], [True, False, False])
    stored, issame = bins.read_bin_encoded(path)
    assert stored[:4] == encoded and images.sniff(stored[4]) == "png"  # PGM stored as lossless PNG
    assert issame.dtype == bool and issame.tolist() == [True, False, False]
    pixels, issame = bins.read_bin(path, (40, 32))
    assert pixels.shape == (6, 40, 32, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[3], images.load(os.path.join(faces_dir, "img20.jpg"), (40, 32)))
    np.testing.assert_array_equal(pixels[4], images.load(os.path.join(orl_dir, "s1", "1.pgm"), (40, 32)))
    assert sorted(os.listdir(tmp_path)) == ["faces.bin"]  # written atomically, no temporary left


@pytest.mark.parametrize("protocol", [2, 5])
def test_reads_numpy_arrays_and_old_protocols(faces_dir, tmp_path, protocol):
    jpeg = _real_bytes(faces_dir, "img5.jpg")[0]
    path = tmp_path / "old.bin"
    path.write_bytes(pickle.dumps(([np.frombuffer(jpeg, np.uint8), jpeg], np.array([np.bool_(True)])), protocol))
    stored, issame = bins.read_bin_encoded(str(path))
    assert stored == [jpeg, jpeg] and issame.tolist() == [True]


def test_hostile_pickle_is_refused_without_running_it(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([_Payload(str(target)), b"x"], [True])))
    with pytest.raises(UserError, match=r"refusing .*lfw\.bin.*global '\w+\.mkdir'.*nothing from the file was run"):
        bins.read_bin_encoded(str(path))
    assert not target.exists()
    path.write_bytes(pickle.dumps(([b"a", b"b"], np.array([True], object))))
    with pytest.raises(UserError, match="object array"):
        bins.read_bin_encoded(str(path))


def test_protocol_guards(faces_dir, tmp_path):
    jpeg = _real_bytes(faces_dir, "img1.jpg")[0]
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([jpeg, jpeg, jpeg], [True])))
    with pytest.raises(UserError, match="has 3 images but 1 pair labels"):
        bins.read_bin_encoded(str(path))
    path.write_bytes(pickle.dumps(([jpeg, jpeg], ["yes"])))
    with pytest.raises(UserError, match="labels .* are not a list of booleans"):
        bins.read_bin_encoded(str(path))
    path.write_bytes(pickle.dumps(([jpeg, 3], [True])))
    with pytest.raises(UserError, match="image 1 .* is a int"):
        bins.read_bin_encoded(str(path))
    path.write_bytes(pickle.dumps(([jpeg, jpeg], [True]))[:-20])
    with pytest.raises(UserError, match="is not an InsightFace .bin pickle"):
        bins.read_bin_encoded(str(path))
    with pytest.raises(UserError, match="3 images for 1 pairs"):
        bins.write_bin(str(path), [jpeg] * 3, [True])
    with pytest.raises(UserError, match="image 1 .* is not an image"):
        bins.write_bin(str(path), [jpeg, b"text"], [True])
    with pytest.raises(UserError, match=r"cfp_fp\.bin not found \(.bin sets present: \['bad'\]\)"):
        bins.find_bins(str(tmp_path), ["bad", "cfp_fp"])


def test_pair_with_a_corrupt_image_is_skipped_and_counted(faces_dir, tmp_path):
    jpeg = _real_bytes(faces_dir, "img1.jpg", "img2.jpg")
    path = tmp_path / "corrupt.bin"
    path.write_bytes(pickle.dumps((jpeg + [jpeg[0][:300], jpeg[1]] + jpeg, [True, False, True])))
    loaded = bins.load_bin(str(path), (24, 24))
    assert loaded.name == "corrupt" and loaded.skipped_pairs == 1
    assert loaded.images.shape == (4, 24, 24, 3) and loaded.issame.tolist() == [True, True]


def test_pairs_to_bin_from_an_lfw_layout(faces_dir, tmp_path):
    for person, files in {"Ann": ["img1.jpg", "img2.jpg"], "Bob": ["img20.jpg"]}.items():
        (tmp_path / person).mkdir()
        for k, name in enumerate(files, start=1):
            (tmp_path / person / f"{person}_{k:04d}.jpg").write_bytes(_real_bytes(faces_dir, name)[0])
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    out = str(tmp_path / "mini.bin")
    assert bins.pairs_to_bin(str(tmp_path), str(tmp_path / "pairs.txt"), out) == 2
    stored, issame = bins.read_bin_encoded(out)
    assert stored == _real_bytes(faces_dir, "img1.jpg", "img2.jpg", "img1.jpg", "img20.jpg")
    assert issame.tolist() == [True, False]
