"""Shared plumbing of the command-line tools: absl flags in, one-line errors out."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app, flags

from tfface.errors import UserError


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
