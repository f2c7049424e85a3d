"""MXNet RecordIO (``.rec`` + ``.idx``) and InsightFace's datasets in it, without MXNet.

Written from the format's documentation (dmlc ``RecordIOWriter``, ``mxnet.recordio``):

* A ``.rec`` file is a sequence of 4-byte aligned physical records, all integers little-endian::

      uint32 magic = 0xced7230a
      uint32 lrec  = cflag << 29 | length          # cflag: upper 3 bits, length: lower 29 bits
      length bytes of data, then zero padding to a multiple of 4

  ``cflag`` 0 is a whole record. A payload that contains the magic number at a 4-byte aligned
  offset is cut there into several physical records (cflag 1 = first, 2 = middle, 3 = last); the
  magic word itself is dropped and put back between the parts by the reader, so no data word ever
  looks like the start of a record.
* A ``.idx`` file is text, one ``key<TAB>byte offset`` line per record: random access.
* An image record's payload starts with the ``IRHeader`` (struct ``<IfQQ``: uint32 flag, float32
  label, uint64 id, uint64 id2); with ``flag > 0`` the label is instead ``flag`` float32 values
  that follow the header. Then come the encoded image bytes.
* InsightFace datasets (``train.rec``, ``train.idx``, ``property``): record 0 is a header with
  label ``(a, b)``: images are keys ``1 .. a-1``, and keys ``a .. b-1`` are one record per identity
  whose label is the key range of its images. Each image's class is its label (or the label's
  first value). ``property`` is one line ``num_classes,height,width``.

Errors name the file and the byte offset (:class:`RecordIOError`).
"""
from __future__ import annotations

import collections
import mmap
import os
import struct
import uuid
from typing import Iterator, NamedTuple, Sequence

from tfface.core.errors import UserError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LREC = struct.Struct("<II")
IRHEADER = struct.Struct("<IfQQ")
MAX_LENGTH = (1 << 29) - 1
_WHOLE, _FIRST, _MIDDLE, _LAST = 0, 1, 2, 3


class RecordIOError(UserError):
    """A malformed ``.rec`` / ``.idx`` file; the message names the file and the byte offset."""

    def __init__(self, path: str, offset: int, what: str):
        super().__init__(f"{path}: byte {offset}: {what}")
        self.path, self.offset, self.what = path, offset, what

    def __reduce__(self):  # crosses process boundaries intact
        return RecordIOError, (self.path, self.offset, self.what)


class IRHeader(NamedTuple):
    """Header of an image record: ``label`` is a float, or a tuple of floats when ``flag > 0``."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def _padding(length: int) -> int:
    return -length % 4


def encode_record(data: bytes) -> bytes:
    """The physical record(s) holding ``data``, split at aligned magic words, padded."""
    cuts = [i for i in range(0, len(data) - 3, 4) if data[i:i + 4] == _MAGIC_BYTES]
    starts, ends = [0] + [c + 4 for c in cuts], cuts + [len(data)]
    out = bytearray()
    for n, (start, end) in enumerate(zip(starts, ends)):
        if end - start > MAX_LENGTH:
            raise ValueError(f"record part of {end - start} bytes exceeds the format's {MAX_LENGTH}")
        if len(starts) == 1:
            cflag = _WHOLE
        else:
            cflag = _FIRST if n == 0 else _LAST if n == len(starts) - 1 else _MIDDLE
        out += _LREC.pack(MAGIC, cflag << 29 | (end - start)) + data[start:end] + b"\0" * _padding(end - start)
    return bytes(out)


def pack(header: IRHeader, payload: bytes) -> bytes:
    """IRHeader + payload (an image record's data). A tuple label is stored after the header
    with ``flag`` set to its length."""
    if isinstance(header.label, (tuple, list)):
        labels = tuple(float(v) for v in header.label)
        return IRHEADER.pack(len(labels), 0.0, header.id, header.id2) + struct.pack(f"<{len(labels)}f", *labels) + payload
    return IRHEADER.pack(0, float(header.label), header.id, header.id2) + payload


def unpack(data: bytes) -> tuple[IRHeader, bytes]:
    """(IRHeader, payload) of an image record's data; raises ValueError when too short."""
    if len(data) < IRHEADER.size:
        raise ValueError(f"record of {len(data)} bytes is shorter than the {IRHEADER.size}-byte IRHeader")
    flag, label, rid, rid2 = IRHEADER.unpack_from(data)
    start = IRHEADER.size
    if flag > 0:
        end = start + 4 * flag
        if len(data) < end:
            raise ValueError(f"IRHeader announces {flag} labels, record has only {len(data) - start} bytes after it")
        return IRHeader(flag, struct.unpack_from(f"<{flag}f", data, start), rid, rid2), data[end:]
    return IRHeader(flag, label, rid, rid2), data[start:]


def read_index(idx_path: str) -> dict[int, int]:
    """key -> byte offset from a ``.idx`` file."""
    index = {}
    with open(idx_path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            try:
                key, offset = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise UserError(f"{idx_path}: line {number}: expected 'key<TAB>offset', got {line.strip()!r}") from None
            index[key] = offset
    return index


class _Closing:
    """``with obj:`` closes ``obj`` at the end."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordReader(_Closing):
    """Reads a ``.rec`` file: by key through its ``.idx`` (``read``), at a byte offset
    (``read_at``), or streaming from the start without an index (``scan``).

    Use as a context manager (or call ``close``).
    """

    def __init__(self, rec_path: str, idx_path: str | None = None):
        if not os.path.isfile(rec_path):
            raise UserError(f"rec: file '{rec_path}' does not exist")
        self.path = rec_path
        self.size = os.path.getsize(rec_path)
        self.index = read_index(idx_path) if idx_path else None
        self._file = open(rec_path, "rb")
        # Memory-mapped: a record is a slice, no system call per read; safe to share across threads.
        self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""

    @property
    def keys(self) -> list[int]:
        """Keys of the ``.idx`` file, in file order."""
        if self.index is None:
            raise UserError(f"{self.path}: opened without an .idx file, keys need one")
        return list(self.index)

    def read(self, key: int) -> bytes:
        """The data of the record ``key`` (needs the ``.idx``)."""
        if self.index is None:
            raise UserError(f"{self.path}: opened without an .idx file, read by key needs one")
        if key not in self.index:
            raise UserError(f"{self.path}: key {key} is not in the .idx file")
        return self.read_at(self.index[key])[0]

    def _part(self, offset: int) -> tuple[int, bytes]:
        head = self._data[offset:offset + 8]
        if len(head) < 8:
            what = "is past the end of the file" if offset >= self.size else "truncated record header"
            raise RecordIOError(self.path, offset, f"{what} (file size {self.size})")
        magic, lrec = _LREC.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(self.path, offset, f"wrong magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
        length = lrec & MAX_LENGTH
        data = self._data[offset + 8:offset + 8 + length]
        if len(data) < length:
            raise RecordIOError(self.path, offset, f"truncated record: {length} bytes announced, "
                                                   f"{len(data)} left in the file")
        return lrec >> 29, data

    def read_at(self, offset: int) -> tuple[bytes, int]:
        """(data of the record at ``offset``, offset of the next record)."""
        if offset % 4:
            raise RecordIOError(self.path, offset, "record offsets are multiples of 4")
        parts, position = [], offset
        while True:
            cflag, data = self._part(position)
            expected = (_WHOLE, _FIRST) if not parts else (_MIDDLE, _LAST)
            if cflag not in expected:
                raise RecordIOError(self.path, position, f"continuation flag {cflag}, expected one of {expected}")
            parts.append(data)
            position += 8 + len(data) + _padding(len(data))
            if cflag in (_WHOLE, _LAST):
                return _MAGIC_BYTES.join(parts), position

    def scan(self, skip_bad: bool = False, errors: list | None = None) -> Iterator[tuple[int, bytes]]:
        """Yields (offset, data) of every record from the start of the file, without the index.

        With ``skip_bad`` a malformed record is appended to ``errors`` (a
        :class:`RecordIOError`) and reading resumes at the next aligned magic word.
        """
        offset = 0
        while offset < self.size:
            try:
                data, following = self.read_at(offset)
            except RecordIOError as err:
                if not skip_bad:
                    raise
                if errors is not None:
                    errors.append(err)
                offset = self._next_magic(offset + 4)
                continue
            yield offset, data
            offset = following

    def _next_magic(self, offset: int) -> int:
        """Offset of the next magic word at a multiple of 4 from ``offset``, or the file size."""
        found = self._data.find(_MAGIC_BYTES, offset)
        while found % 4 and found != -1:
            found = self._data.find(_MAGIC_BYTES, found + 1)
        return self.size if found == -1 else found

    def close(self) -> None:
        if isinstance(self._data, mmap.mmap):
            self._data.close()
        self._file.close()


class RecordWriter:
    """Writes a ``.rec`` (and optionally its ``.idx``) atomically: under temporary names, renamed
    into place by ``close`` (a context manager's clean exit); an error leaves nothing behind."""

    def __init__(self, rec_path: str, idx_path: str | None = None):
        token = uuid.uuid4().hex[:8]
        self._paths = [p for p in (rec_path, idx_path) if p]
        self._tmp = [f"{p}.tmp-{token}" for p in self._paths]
        self._rec = open(self._tmp[0], "wb")
        self._idx = open(self._tmp[1], "w") if idx_path else None
        self.offset = 0

    def write(self, data: bytes, key: int | None = None) -> int:
        """Appends one record (and its ``key`` to the ``.idx``); returns its byte offset."""
        offset = self.offset
        framed = encode_record(data)
        self._rec.write(framed)
        self.offset += len(framed)
        if self._idx is not None:
            if key is None:
                raise ValueError("key: required when writing an .idx")
            self._idx.write(f"{key}\t{offset}\n")
        return offset

    def _finish(self, keep: bool) -> None:
        for f in (self._rec, self._idx):
            if f is not None:
                f.close()
        for tmp, path in zip(self._tmp, self._paths):
            if keep:
                os.replace(tmp, path)
            elif os.path.exists(tmp):
                os.remove(tmp)

    def close(self) -> None:
        """Renames the finished files into place."""
        self._finish(keep=True)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._finish(keep=exc_type is None)  # on error nothing is left behind


# ---- InsightFace datasets -------------------------------------------------------------------


class ImageRecord(NamedTuple):
    """One image of an InsightFace ``.rec``: its key, byte offset, class and encoded bytes."""

    key: int
    offset: int
    label: int
    encoded: bytes


def read_property(rec_dir: str) -> tuple[int, int, int] | None:
    """(num_classes, height, width) from ``rec_dir/property``, or None when there is none."""
    path = os.path.join(rec_dir, "property")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    try:
        num_classes, height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{path}: expected 'num_classes,height,width', got {text!r}") from None
    return num_classes, height, width


def image_label(header: IRHeader) -> int:
    """The class of an image record: its label, or its label's first value."""
    return int(header.label[0] if isinstance(header.label, tuple) else header.label)


class InsightFaceRecord(_Closing):
    """An InsightFace dataset directory (``train.rec`` + ``train.idx`` [+ ``property``]).

    ``image_keys``: keys of the image records (from header record 0, or every key when the file
    has no header); ``identity_ranges``: per identity the (start, end) key range of its images
    (empty without a header). ``num_classes`` comes from ``property``, else from the header.
    """

    def __init__(self, rec_dir: str, name: str = "train"):
        self.rec_path = os.path.join(rec_dir, f"{name}.rec")
        self.idx_path = os.path.join(rec_dir, f"{name}.idx")
        for path in (self.rec_path, self.idx_path):
            if not os.path.isfile(path):
                raise UserError(f"rec_dir: '{rec_dir}' has no {os.path.basename(path)} (expected an InsightFace "
                                f"dataset: {name}.rec, {name}.idx, property)")
        self.reader = RecordReader(self.rec_path, self.idx_path)
        self.property = read_property(rec_dir)
        keys = self.reader.keys
        self.identity_ranges: list[tuple[int, int]] = []
        self.image_keys = keys
        if keys and keys[0] == 0:
            header, _ = self._unpack(0)
            if header.flag > 0:
                first_identity, end = int(header.label[0]), int(header.label[1])
                self.image_keys = [k for k in keys if 0 < k < first_identity]
                for key in range(first_identity, end):
                    identity, _ = self._unpack(key)
                    self.identity_ranges.append((int(identity.label[0]), int(identity.label[1])))
        if self.property:
            self.num_classes, self.image_size = self.property[0], self.property[1:]
        else:
            self.num_classes, self.image_size = len(self.identity_ranges) or None, None

    def _unpack(self, key: int) -> tuple[IRHeader, bytes]:
        offset = self.reader.index.get(key)
        data = self.reader.read(key)
        try:
            return unpack(data)
        except ValueError as err:
            raise RecordIOError(self.rec_path, offset, str(err)) from None

    def image(self, key: int) -> ImageRecord:
        """The image record ``key``: label and encoded bytes."""
        header, payload = self._unpack(key)
        return ImageRecord(key, self.reader.index[key], image_label(header), payload)

    def images(self, keys: Sequence[int] | None = None, skip_bad: bool = False,
               errors: list | None = None) -> Iterator[ImageRecord]:
        """Image records of ``keys`` (default: all); malformed ones raise, or with ``skip_bad``
        go to ``errors``."""
        for key in self.image_keys if keys is None else keys:
            try:
                yield self.image(key)
            except RecordIOError as err:
                if not skip_bad:
                    raise
                if errors is not None:
                    errors.append(err)

    def close(self) -> None:
        self.reader.close()


def write_insightface(rec_dir: str, images: Sequence[tuple[int, bytes]], image_size: tuple[int, int],
                      name: str = "train") -> None:
    """Writes an InsightFace dataset: ``images`` are (class, encoded bytes) sorted by class
    (dense 0..C-1); header record 0, image records 1..N, one identity record per class, and the
    ``property`` file."""
    labels = [label for label, _ in images]
    if labels != sorted(labels):
        raise ValueError("images: expected (class, bytes) pairs sorted by class")
    num_classes = labels[-1] + 1 if labels else 0
    os.makedirs(rec_dir, exist_ok=True)
    first_identity = len(images) + 1
    with RecordWriter(os.path.join(rec_dir, f"{name}.rec"), os.path.join(rec_dir, f"{name}.idx")) as out:
        out.write(pack(IRHeader(0, (first_identity, first_identity + num_classes), 0, 0), b""), key=0)
        for key, (label, encoded) in enumerate(images, 1):
            out.write(pack(IRHeader(0, float(label), key, 0), encoded), key=key)
        start, counts = 1, collections.Counter(labels)
        for label in range(num_classes):
            end = start + counts[label]
            out.write(pack(IRHeader(0, (start, end), first_identity + label, 0), b""), key=first_identity + label)
            start = end
    tmp = os.path.join(rec_dir, f"property.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(f"{num_classes},{image_size[0]},{image_size[1]}\n")
    os.replace(tmp, os.path.join(rec_dir, "property"))
