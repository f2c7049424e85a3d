"""Backbone registry: name -> builder. Families register their variants at import time."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import keras


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone."""

    builder: Callable[..., keras.Model]
    default_input_shape: tuple[int, int, int]
    preset: dict = field(default_factory=dict)


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    builder: Callable[..., keras.Model],
    default_input_shape: tuple[int, int, int],
    **preset,
) -> None:
    """Registers ``builder(input_shape=..., embedding_size=..., **preset, **kw)`` as ``name``."""
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    _BACKBONES[name] = BackboneSpec(builder, tuple(default_input_shape), dict(preset))


def list_backbones() -> list[str]:
    """Names of every registered backbone, sorted."""
    return sorted(_BACKBONES)


def default_input_shape(name: str) -> tuple[int, int, int]:
    """The input shape the published network was trained with."""
    return _spec(name).default_input_shape


def has_dropout(name: str) -> bool:
    """True when backbone ``name`` has a dropout layer (it takes ``keep_probability``)."""
    return "keep_probability" in inspect.signature(_spec(name).builder).parameters


def get_backbone(
    name: str,
    input_shape: tuple[int, int, int] | None = None,
    embedding_size: int = 512,
    **kwargs,
) -> keras.Model:
    """Builds backbone ``name``: standardized images (B, H, W, 3) -> embeddings (B, D).

    Args:
        name: one of :func:`list_backbones`.
        input_shape: (H, W, 3); the published size when None.
        embedding_size: output dimension D.
        **kwargs: family-specific options (e.g. ``bn_scale``). ``keep_probability`` (dropout
            keep probability, 1.0 = no dropout) is accepted by every backbone; one without
            dropout rejects a value below 1.
    """
    spec = _spec(name)
    if "keep_probability" in kwargs and not has_dropout(name):
        keep_probability = kwargs.pop("keep_probability")
        if keep_probability < 1.0:
            raise ValueError(f"backbone {name!r} has no dropout: keep_probability must be 1.0, got {keep_probability}")
    shape = tuple(input_shape) if input_shape else spec.default_input_shape
    return spec.builder(input_shape=shape, embedding_size=embedding_size, **{**spec.preset, **kwargs})


def _spec(name: str) -> BackboneSpec:
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {list_backbones()}")
    return _BACKBONES[name]
