"""Shared plumbing of the command-line tools: absl flags in, one-line errors out."""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from absl import app, flags

from tfface.core.errors import UserError, check_dir


def run_main(main: Callable[[Sequence[str]], object], known_only: bool = False) -> None:
    """Runs ``main(argv)`` under absl; a :class:`UserError` becomes one line on stderr, exit 2.
    With ``known_only``, flags absl does not know stay in ``argv`` (e.g. Beam pipeline options)."""

    def guarded(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    if known_only:
        app.run(guarded, flags_parser=lambda argv: flags.FLAGS(argv, known_only=True))
    else:
        app.run(guarded)


def data_and_model(argv: Sequence[str], command: str, data_name: str) -> tuple[str, str]:
    """The ``<data_dir> <model>`` positional arguments of an evaluation tool, both checked to exist."""
    if len(argv) != 3:
        raise UserError(f"usage: python -m {command} <{data_name}> <model> [--flags]")
    check_dir(argv[1], data_name)
    if not os.path.exists(argv[2]):
        raise UserError(f"model: '{argv[2]}' does not exist")
    return argv[1], argv[2]
