"""Head registry: ``train_softmax --head=<name>`` builds ``get_head(name, num_classes, **kw)``."""
from __future__ import annotations

import keras

_HEADS: dict[str, type[keras.layers.Layer]] = {}


def register_head(name: str):
    """Class decorator: registers a head layer under ``name`` (and as Keras-serializable)."""

    def wrap(cls):
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered")
        _HEADS[name] = keras.saving.register_keras_serializable(package="tfface")(cls)
        return _HEADS[name]

    return wrap


def list_heads() -> list[str]:
    """Names of every registered head, sorted."""
    return sorted(_HEADS)


def get_head_class(name: str) -> type[keras.layers.Layer]:
    """The layer class registered under ``name``."""
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; expected one of {list_heads()}")
    return _HEADS[name]


def get_head(name: str, num_classes: int, **kwargs) -> keras.layers.Layer:
    """Builds head ``name`` for ``num_classes`` classes."""
    return get_head_class(name)(num_classes, **kwargs)
