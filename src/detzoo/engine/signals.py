"""Stop requests from SIGINT/SIGTERM, turned into a flag the training loop reads between steps.

A repeat within ``REPEATED_SIGNAL_S`` is the same request: a terminal's Ctrl-C reaches every process of
the foreground group and torchrun forwards it once more, and SLURM signals every process of a job step
while torchrun forwards it too. A repeat after that means "now": KeyboardInterrupt, without saving.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from ..common.distributed import DistInfo

REPEATED_SIGNAL_S = 2.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """``with StopRequest(announce=True) as stop: ... if stop.signum: ...`` - handlers live only inside the
    block (and only in the main thread, where Python allows them)."""

    def __init__(self, announce: bool = True, action: str = "finishing the current step, then saving"):
        self.announce, self.action = announce, action
        self.signum: int | None = None
        self._time = 0.0
        self._previous: dict = {}

    def _handle(self, signum: int, frame) -> None:
        now = time.monotonic()
        if self.signum is not None:
            if now - self._time < REPEATED_SIGNAL_S:
                return
            raise KeyboardInterrupt
        self.signum, self._time = signum, now
        if self.announce:  # os.write: no buffered-IO lock to re-enter from a signal handler
            os.write(sys.stderr.fileno(), f"\n{signal.Signals(signum).name} received: {self.action} "
                                          "(send it again to stop at once)\n".encode())

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def resume_command(run_dir: Path, dist: DistInfo) -> str:
    """The command that continues a stopped run: plain, or torchrun with this run's process layout."""
    if not dist.enabled:
        return f"detzoo train --resume {run_dir}"
    nodes = dist.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    if nodes > 1:
        return f"torchrun <the same options on each of the {nodes} nodes> -m detzoo train --resume {run_dir}"
    return f"torchrun --nproc_per_node={dist.world_size} -m detzoo train --resume {run_dir}"
