"""Shared plumbing of the command-line tools: absl flags in, one-line errors out."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app

from tfface.errors import UserError


def run_main(main: Callable[[Sequence[str]], object]) -> None:
    """Runs ``main(argv)`` under absl; a :class:`UserError` becomes one line on stderr, exit 2."""

    def guarded(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
