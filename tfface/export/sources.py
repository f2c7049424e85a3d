"""What can be exported: a training run directory, a checkpoint directory, a ``.keras`` file, a
weights file of another framework (:mod:`tfface.importers`), or a pretrained model by name.

A run directory (``train_softmax``'s ``models_base_dir/<subdir>``) holds ``flags.txt`` (how the
embedder was built) and ``checkpoints/``; a checkpoint directory is that ``checkpoints/`` (or any
directory with a TF ``checkpoint`` index) inside a run directory.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from tfface import importers, models
from tfface.core.errors import UserError
from tfface.data import tfrecord
from tfface.importers import Imported

ALIGNMENTS = ("arcface", "sphereface", "facenet_crop", "seqface", "dlib")


def read_flags_file(path: str) -> dict[str, str]:
    """``--name=value`` lines of an absl flagfile -> {name: value} (``--noname`` -> "false")."""
    flags = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("--"):
                continue
            name, sep, value = line[2:].partition("=")
            if not sep:
                name, value = (name[2:], "false") if name.startswith("no") else (name, "true")
            flags[name] = value
    return flags


def make_alignment(align: str, image_size, margin: float = 0.0) -> dict:
    """The alignment metadata of an export: ``{"align", "image_size": [h, w], "margin"}``."""
    if align not in ALIGNMENTS:
        raise UserError(f"--align: expected one of {list(ALIGNMENTS)}, got {align!r}")
    size = [int(image_size), int(image_size)] if isinstance(image_size, (int, float)) else [int(v) for v in image_size]
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--align_image_size: expected a positive height and width, got {image_size!r}")
    return {"align": align, "image_size": size, "margin": float(margin)}


def alignment_from_dataset_info(info: dict) -> dict | None:
    """The alignment a TFRecord dataset records (a dict, or a name + its image size), None if unknown."""
    value = info.get("alignment")
    if isinstance(value, dict) and value.get("align") in ALIGNMENTS:
        return make_alignment(value["align"], value.get("image_size") or info.get("image_size"), value.get("margin", 0.0))
    if value in ALIGNMENTS and info.get("image_size") and (value != "facenet_crop" or "margin" in info):
        return make_alignment(value, info["image_size"], info.get("margin", 0.0))
    return None


def _checkpoint_and_run_dir(path: str) -> tuple[str, str]:
    """(checkpoint prefix, run directory) for a run or checkpoint directory."""
    for ckpt_dir, run_dir in ((os.path.join(path, "checkpoints"), path), (path, os.path.dirname(os.path.abspath(path)))):
        prefix = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        if prefix:
            return prefix, run_dir
    raise UserError(f"--model: no checkpoint found in '{path}' or '{os.path.join(path, 'checkpoints')}'")


def _embedder_from_run(path: str) -> tuple[keras.Model, dict | None]:
    prefix, run_dir = _checkpoint_and_run_dir(path)
    flags_path = os.path.join(run_dir, "flags.txt")
    if not os.path.isfile(flags_path):
        raise UserError(f"--model: '{run_dir}' has no flags.txt (how the embedder was built)")
    flags = read_flags_file(flags_path)
    try:
        size = int(flags.get("image_size", 112))
        image_size = (size, int(flags.get("image_width", 0)) or size)
        standardization = flags.get("standardization") or (
            "prewhiten" if flags.get("use_fixed_image_standardization") == "false" else "fixed_image_standardization")
        embedder = models.build_embedder(flags.get("model_def", "mobilefacenet"), image_size,
                                         int(flags.get("embedding_size", 512)), standardization)
    except ValueError as err:
        raise UserError(f"--model: cannot rebuild the embedder from '{flags_path}' ({err})") from None
    status = tf.train.Checkpoint(embedder=embedder).restore(prefix).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        raise UserError(f"--model: checkpoint '{prefix}' does not match the embedder of '{flags_path}' ({err})") from None
    alignment = None
    for data_dir in (flags.get("data_dir", ""), os.path.join(run_dir, "tfrecords")):
        if data_dir and os.path.isfile(os.path.join(data_dir, tfrecord.INFO_FILE)):
            alignment = alignment_from_dataset_info(tfrecord.read_dataset_info(data_dir))
            break
    return embedder, alignment


def load_source(model: str = "", import_path: str = "", pretrained: str = "", *, fmt: str | None = None,
                arch: str | None = None, weights: str | None = None, **options) -> Imported:
    """The one model to export, from exactly one of ``model`` (see :func:`load_for_export`),
    ``import_path`` (a weights file, :func:`tfface.importers.import_file` with ``fmt``, ``arch`` and
    ``options``) or ``pretrained`` (a name of :func:`tfface.importers.list_pretrained`, read from
    ``weights`` when given, else from the package that ships it)."""
    given = [flag for flag, value in (("--model", model), ("--import", import_path), ("--pretrained", pretrained)) if value]
    if len(given) != 1:
        raise UserError("exactly one of --model (a run directory, checkpoint directory or .keras file), --import "
                        f"(a weights file) or --pretrained (a model name) is required; got {given or 'none'}")
    if import_path:
        return importers.import_file(import_path, fmt, arch, **options)
    if pretrained:
        return importers.load_pretrained(pretrained, weights or None)
    return Imported(*load_for_export(model), None)


def write_source_threshold(imported: Imported, directory: str) -> str | None:
    """``directory/threshold.json`` from the threshold a pretrained model's source states (value and
    how it was obtained, bound to the embedder's fingerprint); None when the source states none."""
    import json

    from tfface.export.saved_model import THRESHOLD_FILE, embedder_metadata

    stated = (imported.source or {}).get("threshold")
    if not stated:
        return None
    fingerprint = embedder_metadata(imported.embedder, imported.alignment, imported.source)["fingerprint"]
    path = os.path.join(directory, THRESHOLD_FILE)
    with open(path, "w") as f:
        json.dump({**stated, "fingerprint": fingerprint}, f, indent=1)
    return path


def load_for_export(path: str) -> tuple[keras.Model, dict | None]:
    """The embedder at ``path`` (run dir, checkpoint dir or ``.keras`` file) and the alignment of
    its training faces when the run's dataset records it (else None)."""
    if not path:
        raise UserError("--model: required (a run directory, a checkpoint directory or a .keras file)")
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise UserError(f"--model: file '{path}' does not exist")
        try:
            model = keras.saving.load_model(path, compile=False)
        except (ValueError, OSError, TypeError) as err:
            raise UserError(f"--model: cannot load '{path}' ({str(err).splitlines()[0][:200]})") from None
        return model, None
    if not os.path.isdir(path):
        raise UserError(f"--model: '{path}' is neither a directory nor a .keras file")
    return _embedder_from_run(path)
