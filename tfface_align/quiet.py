"""Quiet command-line tools: TensorFlow's C++ start-up lines are hidden unless asked for.

When a tfface or tfface_align tool runs (``python -m tfface...``, ``python -m tfface_align...`` or a
``tfface-*`` console script), :func:`quiet_tool_start` runs before TensorFlow is imported (both
packages call it first thing) and

* sets ``TF_CPP_MIN_LOG_LEVEL=3``, which hides what TensorFlow's C++ code logs once it runs
  (``failed call to cuInit`` on a machine without a GPU, CPU-feature and XLA notices), and
* imports TensorFlow with file descriptor 2 captured, then writes back every captured line except
  the C++ log lines (the ones logged while TensorFlow's libraries load, before absl's logging is
  initialised, ignore that variable: oneDNN and ``cudart_stub`` notices).

Nothing changes when the user set ``TF_CPP_MIN_LOG_LEVEL`` (any value; ``0`` shows everything),
gives ``--verbosity``/``-v``, or when tfface is imported by a program that is not one of its tools.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Sequence

TOOL_PACKAGES = ("tfface", "tfface_align")
CPP_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |WARNING: All log messages before absl::InitializeLog\(\)"
    r"|To enable the following instructions: )")


def _module_run_with_m(orig_argv: Sequence[str]) -> str | None:
    """The module of ``python [options] -m MODULE ...``, None for a script or ``-c``."""
    args = iter(orig_argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, None)
        if arg in ("-W", "-X"):
            next(args, None)
        elif not arg.startswith("-") or arg.startswith("-c"):
            return None
    return None


def running_tool(argv: Sequence[str], orig_argv: Sequence[str]) -> bool:
    """Whether this process is one of the tools (a ``tfface-*`` script or ``python -m`` a tool module)."""
    if argv and os.path.basename(argv[0]).startswith("tfface-"):
        return True
    module = _module_run_with_m(orig_argv) or ""
    return module.split(".")[0] in TOOL_PACKAGES


def logs_requested(argv: Sequence[str], environ: dict) -> bool:
    """The user asked for TensorFlow's own lines: ``TF_CPP_MIN_LOG_LEVEL`` set, or ``--verbosity``/``-v``."""
    return "TF_CPP_MIN_LOG_LEVEL" in environ or any(
        arg.split("=")[0] in ("--verbosity", "-verbosity", "-v", "--v") for arg in argv[1:])


def quiet_tool_start() -> None:
    """Hides TensorFlow's C++ start-up lines when a tool runs (see the module docstring); call it
    before TensorFlow is imported. Does nothing after that, or when the user asked for them."""
    if "tensorflow" in sys.modules or not running_tool(sys.argv, getattr(sys, "orig_argv", sys.argv)):
        return
    if logs_requested(sys.argv, os.environ):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401  (the import whose library loading logs)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not CPP_LOG_LINE.match(line)]
            sys.stderr.write("".join(kept))
