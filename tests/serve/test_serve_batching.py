"""The service's batch queue on its own: batches of up to max_batch images, grouped by options, slices of a
large request, held-over jobs, abandoned jobs never run, 503 when full, 504 after the timeout."""

from __future__ import annotations

import asyncio
import threading

import pytest

from detzoo.models.selection import SelectOptions
from detzoo.serve.batching import BatchQueue, QueueFull, QueueTimeout


class FakeModel:
    """Records each call's images and options; answers (image, options) per image. Closed, it holds calls."""

    def __init__(self, fail_for=None):
        self.calls: list[tuple[list, SelectOptions | None]] = []
        self.opened = threading.Event()
        self.opened.set()
        self.entered = threading.Event()
        self.fail_for = fail_for

    def __call__(self, images, options):
        self.entered.set()
        assert self.opened.wait(60)
        self.calls.append((list(images), options))
        if options is not None and options == self.fail_for:
            raise ValueError("this group fails")
        return [(image, options) for image in images]


async def _submit_all(queue: BatchQueue, jobs: list[tuple[list, SelectOptions | None]], timeout_s: float = 60):
    """Queue every job before the worker starts, so that the batches do not depend on timing."""
    tasks = [asyncio.create_task(queue.submit(images, options, timeout_s)) for images, options in jobs]
    await asyncio.sleep(0)
    queue.start()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await queue.stop()
    return results


def test_batches_gather_up_to_max_batch_images():
    model = FakeModel()
    queue = BatchQueue(model, max_batch=4, max_delay_s=0.01, capacity=10)

    async def scenario():
        return await _submit_all(queue, [([i], None) for i in range(5)])

    results = asyncio.run(scenario())
    assert [images for images, _ in model.calls] == [[0, 1, 2, 3], [4]]
    assert [detections for detections, _ in results] == [[(i, None)] for i in range(5)]
    assert [job.batch_images for _, job in results] == [4, 4, 4, 4, 1]


def test_a_request_larger_than_max_batch_runs_in_slices_and_a_job_that_does_not_fit_waits():
    model = FakeModel()
    queue = BatchQueue(model, max_batch=2, max_delay_s=0.01, capacity=10)

    async def scenario():
        return await _submit_all(queue, [([0, 1, 2, 3, 4], None), ([5], None), ([6, 7], None)])

    results = asyncio.run(scenario())
    # the 5-image job is a batch of its own, in slices of 2; [5] does not fit with [6, 7] either
    assert [images for images, _ in model.calls] == [[0, 1], [2, 3], [4], [5], [6, 7]]
    assert [[image for image, _ in detections] for detections, _ in results] == [[0, 1, 2, 3, 4], [5], [6, 7]]


def test_jobs_with_other_options_run_as_their_own_call_and_fail_alone():
    strict = SelectOptions(score_threshold=0.5)
    broken = SelectOptions(max_detections=1)
    model = FakeModel(fail_for=broken)
    queue = BatchQueue(model, max_batch=8, max_delay_s=0.01, capacity=10)

    async def scenario():
        return await _submit_all(queue, [([0], None), ([1], strict), ([2], None), ([3], broken)])

    results = asyncio.run(scenario())
    assert model.calls == [([0, 2], None), ([1], strict), ([3], broken)]
    assert results[0][0] == [(0, None)] and results[1][0] == [(1, strict)] and results[2][0] == [(2, None)]
    assert isinstance(results[3], ValueError)


def test_full_queue_refuses_and_a_late_request_times_out_without_costing_a_model_call():
    model = FakeModel()
    queue = BatchQueue(model, max_batch=1, max_delay_s=0.0, capacity=2)

    async def scenario():
        queue.start()
        model.opened.clear()
        first = asyncio.create_task(queue.submit([0], None, 60))  # taken by the worker, held in the model
        while not model.entered.is_set():
            await asyncio.sleep(0.01)
        late = asyncio.create_task(queue.submit([1], None, 0.2))
        waiting = asyncio.create_task(queue.submit([2], None, 60))
        await asyncio.sleep(0.01)
        assert queue.depth == 2 and queue.full
        with pytest.raises(QueueFull) as refused:
            await queue.submit([3], None, 60)
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
        with pytest.raises(QueueTimeout) as timed_out:
            await late
        assert timed_out.value.status == 504
        model.opened.set()
        results = [(await first)[0], (await waiting)[0]]
        await queue.stop()
        return results

    assert asyncio.run(scenario()) == [[(0, None)], [(2, None)]]
    assert [images for images, _ in model.calls] == [[0], [2]]  # the abandoned job never reached the model
