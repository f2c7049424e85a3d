"""MXNet RecordIO without MXNet: the documented byte layout, round trips, malformed files."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from tfface.data.recordio import (
    MAGIC,
    InsightFaceRecord,
    IRHeader,
    RecordIOError,
    RecordReader,
    RecordWriter,
    encode_record,
    pack,
    read_property,
    unpack,
    write_insightface,
)
from tfface.core.errors import UserError

MAGIC_LE = bytes([0x0A, 0x23, 0xD7, 0xCE])  # 0xced7230a, little-endian


def test_hand_built_image_record_byte_by_byte(tmp_path):
    data = pack(IRHeader(0, 3.0, 7, 0), b"abcde")
    expected = (MAGIC_LE
                + bytes([29, 0, 0, 0])                 # cflag 0 (upper 3 bits), length 24 + 5 = 29
                + bytes([0, 0, 0, 0])                  # IRHeader.flag = 0 (uint32)
                + bytes([0x00, 0x00, 0x40, 0x40])      # label 3.0 (float32)
                + bytes([7, 0, 0, 0, 0, 0, 0, 0])      # id = 7 (uint64)
                + bytes(8)                             # id2 = 0 (uint64)
                + b"abcde" + bytes(3))                 # payload, zero padding to 4 bytes
    assert encode_record(data) == expected
    with RecordWriter(str(tmp_path / "a.rec"), str(tmp_path / "a.idx")) as out:
        assert out.write(data, key=5) == 0
        assert out.write(b"", key=6) == 40
    assert (tmp_path / "a.rec").read_bytes() == expected + MAGIC_LE + bytes(4)
    assert (tmp_path / "a.idx").read_text() == "5\t0\n6\t40\n"
    assert unpack(data) == (IRHeader(0, 3.0, 7, 0), b"abcde")


def test_label_vector_follows_the_header():
    data = pack(IRHeader(0, (1.0, 2.5), 1, 2), b"xy")
    assert data[:4] == bytes([2, 0, 0, 0])  # flag = number of labels
    assert data[24:32] == struct.pack("<2f", 1.0, 2.5) and data[32:] == b"xy"
    assert unpack(data) == (IRHeader(2, (1.0, 2.5), 1, 2), b"xy")


def test_magic_inside_data_splits_into_continuation_records(tmp_path):
    data = b"AAAA" + MAGIC_LE + b"BB" + MAGIC_LE  # aligned magic at 4: split; at 10: unaligned, kept
    framed = encode_record(data)
    length_last = len(data) - 8
    assert framed == (MAGIC_LE + struct.pack("<I", 1 << 29 | 4) + b"AAAA"
                      + MAGIC_LE + struct.pack("<I", 3 << 29 | length_last) + data[8:] + bytes(-length_last % 4))
    two = b"C" * 8 + MAGIC_LE + MAGIC_LE + b"D"  # first, middle (empty), last
    flags = [struct.unpack_from("<I", encode_record(two), o)[0] >> 29 for o in (4, 20, 28)]
    assert flags == [1, 2, 3]
    path = tmp_path / "m.rec"
    path.write_bytes(framed + encode_record(two))
    with RecordReader(str(path)) as reader:
        assert [d for _, d in reader.scan()] == [data, two]


def test_round_trip_random_access_and_streaming(tmp_path):
    rng = np.random.default_rng(0)
    payloads = [rng.integers(0, 256, rng.integers(0, 300), np.uint8).tobytes() for _ in range(40)]
    payloads[3] = MAGIC_LE * 5  # nothing but magic words
    keys = rng.permutation(1000)[:40].tolist()
    rec, idx = str(tmp_path / "r.rec"), str(tmp_path / "r.idx")
    with RecordWriter(rec, idx) as out:
        offsets = [out.write(p, key=k) for p, k in zip(payloads, keys)]
    with RecordReader(rec, idx) as reader:
        assert reader.keys == keys
        for k in rng.permutation(keys):
            assert reader.read(int(k)) == payloads[keys.index(k)]
        assert list(reader.scan()) == list(zip(offsets, payloads))
    assert sorted(os.listdir(tmp_path)) == ["r.idx", "r.rec"]  # no temporary files left


def _dataset(tmp_path, counts=(3, 1, 2)):
    images = [(label, f"image-{label}-{i}".encode() * 3) for label, n in enumerate(counts) for i in range(n)]
    write_insightface(str(tmp_path), images, (112, 112))
    return images


def test_insightface_layout_round_trip(tmp_path):
    images = _dataset(tmp_path)
    assert read_property(str(tmp_path)) == (3, 112, 112)
    with InsightFaceRecord(str(tmp_path)) as ds:
        assert ds.image_keys == [1, 2, 3, 4, 5, 6]
        assert ds.identity_ranges == [(1, 4), (4, 5), (5, 7)]
        assert ds.num_classes == 3 and tuple(ds.image_size) == (112, 112)
        header, _ = unpack(ds.reader.read(0))
        assert header.flag == 2 and header.label == (7.0, 10.0)  # images 1..6, identities 7..9
        assert [(r.label, r.encoded) for r in ds.images()] == images
        assert ds.image(5).label == 2


def test_errors_name_file_and_offset(tmp_path):
    _dataset(tmp_path)
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    data = rec.read_bytes()
    offsets = {int(k): int(v) for k, v in (line.split("\t") for line in idx.read_text().splitlines())}

    # .idx pointing past the end
    idx.write_text(idx.read_text() + f"99\t{len(data) + 64}\n")
    with RecordReader(str(rec), str(idx)) as reader, pytest.raises(RecordIOError, match="past the end") as err:
        reader.read(99)
    assert err.value.path == str(rec) and err.value.offset == len(data) + 64
    assert str(rec) in str(err.value) and f"byte {len(data) + 64}" in str(err.value)

    # wrong magic at image 2; skip_bad counts it and keeps the others
    broken = bytearray(data)
    broken[offsets[2]:offsets[2] + 4] = b"\xde\xad\xbe\xef"
    rec.write_bytes(bytes(broken))
    with InsightFaceRecord(str(tmp_path)) as ds:
        with pytest.raises(RecordIOError, match=f"byte {offsets[2]}: wrong magic 0xefbeadde"):
            list(ds.images())
        errors = []
        assert [r.key for r in ds.images(skip_bad=True, errors=errors)] == [1, 3, 4, 5, 6]
        assert [e.offset for e in errors] == [offsets[2]]
    with RecordReader(str(rec)) as reader:  # streaming resynchronises at the next magic word
        errors = []
        assert [o for o, _ in reader.scan(skip_bad=True, errors=errors)] == [o for k, o in offsets.items() if k != 2]
        assert len(errors) == 1

    # truncated file: the last record is cut
    rec.write_bytes(data[:-6])
    with RecordReader(str(rec)) as reader:
        with pytest.raises(RecordIOError, match=f"byte {offsets[9]}: truncated record"):
            list(reader.scan())
        errors = []
        assert len(list(reader.scan(skip_bad=True, errors=errors))) == 9 and len(errors) == 1
    rec.write_bytes(data[:offsets[9] + 5])
    with RecordReader(str(rec)) as reader, pytest.raises(RecordIOError, match="truncated record header"):
        list(reader.scan())


def test_bad_directory_and_idx(tmp_path):
    with pytest.raises(UserError, match="has no train.rec"):
        InsightFaceRecord(str(tmp_path))
    (tmp_path / "x.rec").write_bytes(b"")
    (tmp_path / "x.idx").write_text("1 0\n")
    with pytest.raises(UserError, match=r"x.idx: line 1: expected 'key<TAB>offset'"):
        RecordReader(str(tmp_path / "x.rec"), str(tmp_path / "x.idx"))
    (tmp_path / "property").write_text("12,112\n")
    with pytest.raises(UserError, match="expected 'num_classes,height,width'"):
        read_property(str(tmp_path))
    assert MAGIC == 0xCED7230A
