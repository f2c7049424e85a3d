"""The importer registry: source formats (by name and file suffix) and pretrained models (by name).

A format loader is ``load(path, arch, options) -> Imported``; ``arch`` is the backbone asked for
(None: the loader tells it from the file, or refuses saying ``--arch`` is needed) and ``options``
holds format-specific files or switches (e.g. ``{"mean": "mean.binaryproto"}``). A loader refuses
a file that does not fit with one :class:`~tfface.core.errors.UserError` line naming the file and
the first missing or mismatched tensor. Importer modules register themselves when
:mod:`tfface.importers` imports them.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple

import keras

from tfface.core.errors import UserError


class Imported(NamedTuple):
    """An imported model: the embedder (pixels -> embeddings), the alignment of the faces it was
    trained on (``{"align", "image_size", "margin"}``, see :mod:`tfface.export.sources`) and its
    provenance, recorded as ``source`` in the export's metadata: ``{"format", "file", "sha256",
    "arch", "licence"}`` plus anything format-specific."""

    embedder: keras.Model
    alignment: dict | None
    source: dict


Loader = Callable[[str, "str | None", dict], Imported]


@dataclass(frozen=True)
class _Format:
    load: Loader
    suffixes: tuple[str, ...]


_FORMATS: dict[str, _Format] = {}
_PRETRAINED: dict[str, Callable[["str | None"], Imported]] = {}


def register_format(name: str, load: Loader, suffixes: tuple[str, ...] = ()) -> None:
    """Registers source format ``name``, picked by ``--format name`` or by a file suffix."""
    if name in _FORMATS:
        raise ValueError(f"import format {name!r} is already registered")
    _FORMATS[name] = _Format(load, tuple(s.lower() for s in suffixes))


def register_pretrained(name: str, load: Callable[["str | None"], Imported]) -> None:
    """Registers pretrained model ``name``: ``load(path)`` reads it from ``path``, or from the
    installed package that ships it when ``path`` is None."""
    if name in _PRETRAINED:
        raise ValueError(f"pretrained model {name!r} is already registered")
    _PRETRAINED[name] = load


def list_formats() -> list[str]:
    """Names of the registered source formats, sorted."""
    return sorted(_FORMATS)


def list_pretrained() -> list[str]:
    """Names of the registered pretrained models, sorted."""
    return sorted(_PRETRAINED)


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_file(path: str, fmt: str | None = None, arch: str | None = None, **options) -> Imported:
    """Imports the weights file ``path`` (format ``fmt``, else told from its suffix)."""
    if not path or not os.path.exists(path):
        raise UserError(f"--import: file '{path}' does not exist")
    if fmt is None:
        matches = [name for name, spec in _FORMATS.items() if path.lower().endswith(spec.suffixes)]
        if len(matches) != 1:
            raise UserError(f"--import: cannot tell the format of '{path}' from its name; "
                            f"pass --format, one of {list_formats()}")
        fmt = matches[0]
    if fmt not in _FORMATS:
        raise UserError(f"--format: expected one of {list_formats()}, got {fmt!r}")
    return _FORMATS[fmt].load(path, arch, options)


def load_pretrained(name: str, path: str | None = None) -> Imported:
    """The pretrained model ``name``, from ``path`` or from the package that ships its weights."""
    if name not in _PRETRAINED:
        raise UserError(f"--pretrained: unknown model {name!r}; expected one of {list_pretrained()}")
    return _PRETRAINED[name](path)
