"""SIGTERM as a pre-emption notice: the training loop checkpoints and stops instead of dying."""
from __future__ import annotations

import signal
import threading

from absl import logging


class StopSignal:
    """Within ``with StopSignal() as stop:``, SIGTERM sets ``stop.received`` instead of killing.

    Cloud schedulers (Kubernetes, GCE pre-emption, Slurm) send SIGTERM some seconds before
    SIGKILL; the loop polls ``received`` between steps, saves a checkpoint and returns. The
    previous handler comes back on exit. Outside the main thread (where Python cannot install
    handlers) nothing is installed and ``received`` stays False.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM received: checkpointing after the current steps, then stopping")
        self.received = True

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
