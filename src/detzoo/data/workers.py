"""DataLoader worker processes that report a bad sample in one line and never outlive an error.

**One line.** A ``DataError`` raised inside a worker reaches the main process as torch re-raises it: the same
type, its message replaced by "Caught DataError in DataLoader worker process 0. Original Traceback ..." (20
lines). So a ``DetectionDataset`` in a worker returns a ``BadSample`` instead of raising, ``Collate`` turns it
into a ``Batch`` carrying the message, and ``CheckedLoader`` raises the DataError in the main process with the
message the main process would have raised itself.

**Nothing left running.** A DataLoader stops its workers when its iterator is garbage-collected. After an error
raised from a worker, that iterator is kept alive by a reference cycle (torch's re-raised exception -> its
traceback -> the frame holding the exception), so it was still there when the interpreter exited;
multiprocessing's exit handler then sends its daemon children SIGTERM - which detzoo's workers ignore
(``loader.ignore_stop_signals``: Ctrl-C and SLURM signal every process of a job, and the main process must
finish its step first) - and joins them: forever (issue 21: a finished epoch lost, 7 GB held until killed).
Here the iterator of every ``CheckedLoader`` with workers is tracked; an exception in the loop, the trainer's
error path (``stop_loader_workers``) and an exit handler that runs before multiprocessing's stop the workers
with torch's own shutdown (a stop message to each worker, a short join), then SIGKILL for any still alive.
"""

from __future__ import annotations

import atexit
import weakref
from dataclasses import dataclass

from torch.utils.data import DataLoader

from .records import DataError

_live_iterators: weakref.WeakSet = weakref.WeakSet()
_exit_handler_registered = False


@dataclass(frozen=True)
class BadSample:
    """What a dataset returns in a worker instead of raising its DataError (the message, one line)."""

    message: str


class CheckedLoader(DataLoader):
    """A DataLoader whose iteration raises a worker's bad sample as the DataError the main process would raise,
    and stops its workers on any exception (see the module docstring). Batches with an ``error`` attribute set
    are the bad samples' (``loader.Collate``)."""

    def __iter__(self):
        iterator = super().__iter__()
        if self.num_workers > 0:
            _track(iterator)
        try:
            for batch in iterator:
                error = getattr(batch, "error", None)
                if error:
                    raise DataError(error)
                yield batch
        except GeneratorExit:  # the consumer stopped early (max_steps, precise BN): torch's usual clean-up
            raise
        except BaseException:
            _stop(iterator)
            if getattr(self, "_iterator", None) is iterator:  # persistent workers: start afresh next time
                self._iterator = None
            raise


def _track(iterator) -> None:
    global _exit_handler_registered
    _live_iterators.add(iterator)
    if not _exit_handler_registered:
        # atexit runs handlers last-registered first: registered once workers exist (so after multiprocessing
        # has registered its own), this runs before multiprocessing joins its children
        atexit.register(stop_loader_workers)
        _exit_handler_registered = True


def stop_loader_workers() -> int:
    """Stop the worker processes of every DataLoader iterator still alive; returns how many iterators had any."""
    iterators = list(_live_iterators)
    for iterator in iterators:
        _stop(iterator)
    return len(iterators)


def stop_workers_of(loader: DataLoader) -> None:
    """Stop one loader's workers now (a persistent loader's live between passes until this, or the exit)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None:
        _stop(iterator)
        loader._iterator = None


def _stop(iterator) -> None:
    shutdown = getattr(iterator, "_shutdown_workers", None)  # torch's orderly shutdown (private, no public one)
    if shutdown is not None:
        shutdown()  # sets the done event, sends each worker its stop message, joins each for up to 5 s
    for worker in getattr(iterator, "_workers", []):
        if worker.is_alive():  # torch's fallback is SIGTERM, which the workers ignore
            worker.kill()
            worker.join(timeout=5)
    _live_iterators.discard(iterator)
