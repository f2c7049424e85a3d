"""Warm start: a new run's backbone starts from another run's trained weights (not its head)."""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from tfface.core.errors import UserError


def resolve_checkpoint(path: str) -> str:
    """A checkpoint prefix for ``path``: a prefix itself, a ``checkpoints/`` directory, a run
    directory (its newest checkpoint) or an exported SavedModel version directory."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return os.path.join(path, "variables", "variables")
    for directory in (path, os.path.join(path, "checkpoints")):
        if os.path.isdir(directory) and tf.train.latest_checkpoint(directory):
            return tf.train.latest_checkpoint(directory)
    if os.path.isfile(f"{path}.index"):
        return path
    raise UserError(f"--pretrained_model: no checkpoint or exported model at '{path}' "
                    f"(expected a run directory, its checkpoints/, a checkpoint prefix or a SavedModel version)")


def load_pretrained_weights(embedder: keras.Model, name: str) -> str:
    """Copies every weight of the pretrained model ``name`` (:func:`tfface.importers.list_pretrained`)
    into ``embedder``; returns the file read. Backbone, image and embedding size must match."""
    from tfface.importers import load_pretrained

    imported = load_pretrained(name)
    source = imported.embedder

    def standardization(model):
        return model.get_layer("standardize").standardization if "standardize" in [l.name for l in model.layers] else None

    if (source.name, standardization(source)) != (embedder.name, standardization(embedder)) or \
            [w.shape for w in source.weights] != [w.shape for w in embedder.weights]:
        raise UserError(f"--pretrained_model: {name} is {source.name} with input {source.input_shape[1:]} and "
                        f"output {source.output_shape[1:]} and standardization {standardization(source)!r}, this run builds {embedder.name} with input "
                        f"{embedder.input_shape[1:]}, output {embedder.output_shape[1:]} and standardization "
                        f"{standardization(embedder)!r}")
    embedder.set_weights(source.get_weights())
    return imported.source["file"]


def load_backbone_weights(embedder: keras.Model, path: str) -> str:
    """Restores every weight of ``embedder`` from the run or export at ``path``, or from the
    pretrained model of that name; returns the checkpoint or file read. Heads, optimizer state and
    counters of that run are ignored, so the new run may have other identities. The architecture
    (backbone, image and embedding size) must match."""
    from tfface.importers import list_pretrained

    if path in list_pretrained() and not os.path.exists(path):
        return load_pretrained_weights(embedder, path)
    checkpoint = resolve_checkpoint(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        _restore_export(embedder, path)
        return checkpoint
    try:
        status = tf.train.Checkpoint(embedder=embedder).restore(checkpoint)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0][:300]
        raise UserError(f"--pretrained_model: '{path}' does not fit this backbone ({first})") from None
    return checkpoint


def _restore_export(embedder: keras.Model, path: str) -> None:
    """Sets ``embedder``'s weights from the export at ``path`` by variable path (an export tracks
    the variables its signatures read, not the Keras model's checkpoint structure)."""
    from tfface.export.saved_model import read_exported_weights

    exported = read_exported_weights(path)
    for weight in embedder.weights:
        value = exported.get(weight.path)
        if value is None or tuple(value.shape) != tuple(weight.shape):
            found = "missing" if value is None else f"of shape {tuple(value.shape)}"
            raise UserError(f"--pretrained_model: '{path}' does not fit this backbone ('{weight.path}' {found}, "
                            f"expected shape {tuple(weight.shape)})")
        weight.assign(value)
