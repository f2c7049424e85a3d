"""User-facing validation: raise early, say what was expected and what was given.

CLIs catch :class:`UserError` and print it as one line (no traceback), exit code 2.
"""
from __future__ import annotations

import os
from typing import Any, Iterable


class UserError(ValueError):
    """A mistake in the user's input (a flag, a path, a file); printed without a traceback."""


def check_dir(path: str, what: str) -> str:
    """Returns ``path`` if it is an existing, non-empty directory."""
    if not path:
        raise UserError(f"{what}: no directory given")
    if not os.path.isdir(path):
        raise UserError(f"{what}: '{path}' is not a directory")
    if not os.listdir(path):
        raise UserError(f"{what}: directory '{path}' is empty")
    return path


def check_file(path: str, what: str) -> str:
    """Returns ``path`` if it is an existing regular file."""
    if not path or not os.path.isfile(path):
        raise UserError(f"{what}: file '{path}' does not exist")
    return path


def check_choice(value: Any, choices: Iterable[Any], what: str) -> Any:
    """Returns ``value`` if it is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise UserError(f"{what}: expected one of {choices}, got {value!r}")
    return value


def check_unit_interval(value: float, what: str, kind: str = "a value") -> float:
    """Returns ``value`` if it lies in [0, 1]; ``kind`` names it in the error (e.g. 'a probability')."""
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{what}: expected {kind} in [0, 1], got {value}")
    return value


def check_positive(value: float, what: str, allow_zero: bool = False) -> float:
    """Returns ``value`` if it is > 0 (or >= 0 with ``allow_zero``)."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"{what}: expected a number {bound}, got {value!r}")
    return value
