"""One bounded queue in front of the model and one worker that turns it into batches.

A request's decoded images become a ``Job``. ``BatchQueue.submit`` refuses at once when the queue is full
(``QueueFull``: the route answers 503 with Retry-After) and gives up after the request's timeout
(``QueueTimeout``: 504). The worker takes the first waiting job, then keeps taking jobs for at most
``max_delay_s`` or until ``max_batch`` images are gathered, and runs the batch in its own thread: the event
loop never runs the model, so it keeps accepting, refusing and answering while a batch runs.

A batch's jobs are grouped by their selection options (score, IoU, cap, classes): one model call applies one
set of options, so each group is one call (``Predictor.predict_images``), in arrival order. Requests with the
model's own options - the common case - always share a call. A job with more images than ``max_batch`` is
run in slices of ``max_batch``. Jobs whose request already gave up are dropped before they cost a model call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..common.structures import Detections
from ..models.selection import SelectOptions
from .errors import RequestError

log = logging.getLogger("detzoo.serve")
Predict = Callable[[list[torch.Tensor], SelectOptions | None], list[Detections]]


class QueueFull(RequestError):
    def __init__(self, capacity: int):
        super().__init__(503, f"server busy: {capacity} request(s) already wait for the model; retry shortly",
                         {"Retry-After": "1"})


class QueueTimeout(RequestError):
    def __init__(self, timeout_s: float):
        super().__init__(504, f"no answer within the request timeout of {timeout_s:g} s (the server is "
                              "overloaded); retry later")


@dataclass
class Job:
    images: list[torch.Tensor]
    options: SelectOptions | None
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    queue_wait_s: float = 0.0
    inference_s: float = 0.0
    batch_images: int = 0  # images in the model call(s) this job was part of

    @property
    def abandoned(self) -> bool:
        return self.future.done()


@dataclass
class BatchStats:
    """What the metrics record about the worker (callbacks, so this module needs no metrics library)."""

    on_queue_wait: Callable[[float], None] = lambda seconds: None
    on_batch: Callable[[int, float], None] = lambda images, seconds: None
    on_depth: Callable[[int], None] = lambda depth: None


class BatchQueue:
    def __init__(self, predict: Predict, max_batch: int, max_delay_s: float, capacity: int,
                 stats: BatchStats | None = None):
        self.predict = predict
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.capacity = capacity
        self.stats = stats or BatchStats()
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.held: Job | None = None  # taken from the queue but left for the next batch (it did not fit)
        self.gathering = 0  # jobs in the batch being formed (they still wait for the model)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detzoo-inference")
        self.worker: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Requests accepted and not yet handed to the model (queued, held over, or in the forming batch)."""
        return self.queue.qsize() + (self.held is not None) + self.gathering

    @property
    def full(self) -> bool:
        return self.depth >= self.capacity

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run(), name="detzoo-batcher")

    async def stop(self) -> None:
        """Stop the worker (after the drain: nothing waits any more) and its thread."""
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, images: list[torch.Tensor], options: SelectOptions | None,
                     timeout_s: float) -> tuple[list[Detections], Job]:
        if self.full:
            raise QueueFull(self.capacity)
        job = Job(images, options, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        self.stats.on_depth(self.depth)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s), job
        except asyncio.TimeoutError:
            raise QueueTimeout(timeout_s) from None
        finally:
            if not job.future.done():
                job.future.cancel()  # the worker skips it, or drops its result

    async def _next_job(self, timeout_s: float | None) -> Job | None:
        if self.held is not None:
            job, self.held = self.held, None
            return job
        if timeout_s is None:
            return await self.queue.get()
        if timeout_s <= 0:
            return self.queue.get_nowait() if not self.queue.empty() else None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout_s)
        except asyncio.TimeoutError:
            return None

    async def _gather(self) -> list[Job]:
        """The next batch: the first waiting job, then more until max_batch images or max_delay_s."""
        first = await self._next_job(None)
        batch, images = [first], len(first.images)
        self.gathering = 1
        deadline = time.perf_counter() + self.max_delay_s
        while images < self.max_batch:
            job = await self._next_job(deadline - time.perf_counter())
            if job is None:
                break
            if job.abandoned:
                continue
            if images + len(job.images) > self.max_batch:
                self.held = job
                break
            batch.append(job)
            images += len(job.images)
            self.gathering = len(batch)
        self.gathering = 0
        return [job for job in batch if not job.abandoned]

    async def _run(self) -> None:
        while True:
            try:
                await self._run_one()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not leave every later request waiting for its timeout
                log.exception("batch worker error (the worker goes on)")

    async def _run_one(self) -> None:
        loop = asyncio.get_running_loop()
        batch = await self._gather()
        self.stats.on_depth(self.depth)
        started = time.perf_counter()
        for job in batch:
            job.queue_wait_s = started - job.enqueued
            self.stats.on_queue_wait(job.queue_wait_s)
        for group in _groups(batch):
            try:
                results = await loop.run_in_executor(self.executor, self._infer, group)
            except Exception as exc:  # a bad option for this model (422) or a bug (500): this group only
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, detections in zip(group, results):
                if not job.future.done():
                    job.future.set_result(detections)

    def _infer(self, group: list[Job]) -> list[list[Detections]]:
        """Runs in the worker thread: the group's images in calls of at most max_batch images."""
        images = [image for job in group for image in job.images]
        started = time.perf_counter()
        detections: list[Detections] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start: start + self.max_batch]
            chunk_started = time.perf_counter()
            detections += self.predict(chunk, group[0].options)
            self.stats.on_batch(len(chunk), time.perf_counter() - chunk_started)
        elapsed = time.perf_counter() - started
        results, offset = [], 0
        for job in group:
            results.append(detections[offset: offset + len(job.images)])
            offset += len(job.images)
            job.inference_s, job.batch_images = elapsed, min(len(images), self.max_batch)
        return results


def _groups(batch: list[Job]) -> list[list[Job]]:
    """Jobs with equal options together, groups in order of their first job."""
    groups: dict[SelectOptions | None, list[Job]] = {}
    for job in batch:
        groups.setdefault(job.options, []).append(job)
    return list(groups.values())
