"""Dynamic batching in front of a backend, the way Triton's default scheduler does it.

- A batch is dispatched as soon as a model instance is idle; whatever queued while every instance was busy
  joins the next batch. So one client pays no waiting window, and many clients get big batches for free.
  An optional ``max_queue_delay_s`` waits a little longer for a fuller batch.
- Batches are counted in rows; a request may carry several rows. A request larger than ``max_batch_size``
  is split into chunks and reassembled, so callers need not know the limit.
- Only requests whose non-batch shapes and dtypes match share a batch (one queue per shape key).
- Optional preferred batch sizes (buckets): a batch is padded up to the next bucket (for CUDA graphs and
  TensorRT profiles) and the padding is dropped from the results.
- What batches cost is learned as they run (``ferry.batch_cost``): batches measured cheap enough run on the event
  loop's thread, and optionally (CPU models) batches stop growing past the size measured to cost more per row.
- With nothing to batch with (the queue empty, no batch running, the last batches one request each), a request
  whose batch would run on the loop thread anyway runs in its caller's task: no hand-off to the worker and back.
- The queue is bounded in rows (``Overloaded`` beyond it); every request has a deadline; a caller that goes
  away leaves the queue; a failing batch fails only its own callers; each output must have as many rows as
  the batch, and each caller gets exactly its own rows.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ferry.batch_cost import BatchCostModel
from ferry.errors import BackendError, DeadlineExceeded, NotReady, Overloaded, ServingError

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
GATHER_PASSES = 8  # at most this many loop passes to read requests that arrived before an inline batch
# After this many gathers in a row found nothing new (one client at a time), only every this-many-th batch gathers.
FRUITLESS_GATHERS = 8
# After this many batches in a row held one request each, requests with nothing to batch with skip the queue.
LONE_BATCHES = 8
Runner = Callable[[Tensors], Tensors]


@dataclass(frozen=True)
class BatchingPolicy:
    enabled: bool = True
    """When false every request runs alone (still off the event loop, still bounded)."""
    max_batch_size: int = 64
    """Most rows in one batch."""
    max_queue_delay_s: float = 0.0
    """How long the oldest request may wait for a fuller batch once an instance is idle (0: never wait)."""
    max_queue_rows: int = 8192
    """Rows that may wait in the queue; beyond it requests are refused with ``Overloaded``."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Buckets to pad batches up to (sorted ascending); empty: no padding."""
    inline_below_s: float = 0.0
    """Run batches measured to take less than this on the event loop thread (0: always on the instance thread)."""
    adaptive_max_batch: bool = False
    """Cap batches below ``max_batch_size`` while larger ones are measured to cost more CPU time per row."""

    @property
    def batch_rows(self) -> int:
        # Also with batching off: a request of several rows (e.g. batched by the client) runs as one batch.
        return self.max_batch_size


# A request in the batcher: (future, inputs, rows, enqueued, deadline), the loop times of its arrival and deadline.
# A tuple, not an object with fields: 64 one-row requests make 64 of these per batch, and a tuple costs a
# twentieth of an object's construction (~10 ns against ~200). A job is queued exactly while it is in a queue:
# jobs leave only from the front (taken into a batch, or dropped as cancelled or expired), so no flag is needed.
_Job = tuple[asyncio.Future, Tensors, int, float, float]
_FUTURE, _INPUTS, _ROWS, _ENQUEUED, _DEADLINE = range(5)


class BatchMetrics:
    """Hooks the batcher reports to, once per batch (not per request: at tens of thousands of requests a second
    each observation shows); the default does nothing (``ferry.metrics`` provides Prometheus)."""

    def batch(self, rows: int, padded_rows: int, compute_seconds: float) -> None: ...

    def queue_wait(self, seconds: float) -> None:
        """The longest time a request of the batch waited in the queue."""

    def outcome(self, outcome: str, count: int = 1) -> None: ...


class DynamicBatcher:
    def __init__(
        self,
        name: str,
        runners: list[Runner],
        policy: BatchingPolicy,
        metrics: BatchMetrics | None = None,
    ):
        if not runners:
            raise ValueError("a batcher needs at least one runner (model instance)")
        self.name = name
        self.policy = policy
        self.metrics = metrics or BatchMetrics()
        self._runners = runners
        # The policy's limits as plain attributes: read on every request.
        self._batch_rows = policy.batch_rows
        self._max_queue_rows = policy.max_queue_rows
        self._buckets = sorted(policy.preferred_batch_sizes)
        self._queues: dict[tuple, collections.deque[_Job]] = {}
        self._queued_rows = 0
        self._running_batches = 0
        self._accepting = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._fruitless_gathers = 0  # gathers in a row that found no new rows (see _gather_arrived)
        self._lone_batches = 0  # the worker's batches in a row that held one request (see _runs_at_once)
        self._direct_runs = 0  # requests that might have skipped the queue, each LONE_BATCHES-th a probe
        self._workers: list[asyncio.Task] = []
        self._sweeper: asyncio.Task | None = None
        self._running: list[list[_Job]] = []
        self.cost = BatchCostModel(policy.batch_rows, policy.inline_below_s, policy.adaptive_max_batch, name)
        self._executors: list[ThreadPoolExecutor] = []

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def start(self) -> None:
        """Create the loop-bound objects and one worker (with its own thread) per model instance."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        for index, runner in enumerate(self._runners):
            executor = ThreadPoolExecutor(1, thread_name_prefix=f"ferry-{self.name}-{index}")
            self._executors.append(executor)
            self._workers.append(asyncio.create_task(self._worker(runner, executor)))
        self._sweeper = asyncio.create_task(self._sweep_deadlines())
        self._accepting = True

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new work, let queued and running batches finish (up to the timeout), then stop."""
        self._accepting = False
        if self._idle is not None:
            try:
                await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
            except TimeoutError:
                log.warning("model %s: %d rows still queued at shutdown", self.name, self._queued_rows)
        tasks = [*self._workers, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        for queue in self._queues.values():
            for job in queue:
                if not job[_FUTURE].done():
                    job[_FUTURE].set_exception(NotReady(f"model {self.name!r} is shutting down"))
        self._queues.clear()
        for executor in self._executors:
            executor.shutdown(wait=False)
        self._executors.clear()

    def infer(
        self, inputs: Tensors, rows: int, timeout_s: float, key: tuple | None = None
    ) -> Awaitable[Tensors]:
        """Run ``rows`` rows through the model; the awaitable gives outputs with exactly those rows.

        ``key`` is the batch key (name, row shape, dtype per input) when the caller already knows it (a model
        with a fixed signature), so it is not rebuilt per request.

        A plain function, not a coroutine: a queued request's awaitable is its job's future, so a request costs
        no coroutine frame of its own to create and resume (64 one-row requests spend the engine's overhead
        here). A caller that goes away cancels that future; the worker and the deadline sweep take cancelled
        jobs out of the queue without computing them."""
        if rows > self._batch_rows:
            return self._infer_chunked(inputs, rows, timeout_s)
        queued_before = self._queued_rows
        if not self._accepting or queued_before + rows > self._max_queue_rows:
            self._refuse()
        loop = self._loop
        now = loop.time()
        future = loop.create_future()
        job = (future, inputs, rows, now, now + timeout_s)
        if not queued_before and self._runs_at_once(rows):
            return self._run_now(job)
        if key is None:
            key = tuple([(name, array.shape[1:], array.dtype) for name, array in inputs.items()])
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
        queue.append(job)
        self._queued_rows = queued_before + rows
        if not queued_before:
            # (With rows already queued, the batcher is not idle and the workers were woken for them.)
            self._idle.clear()
            self._wakeup.set()
        return future

    async def _infer_chunked(self, inputs: Tensors, rows: int, timeout_s: float) -> Tensors:
        limit = self._batch_rows
        if not self._accepting or self._queued_rows + rows > self._max_queue_rows:
            self._refuse()  # all chunks or none: a half-admitted request would only waste work
        chunks = [
            asyncio.ensure_future(
                self.infer(
                    {k: v[start : start + limit] for k, v in inputs.items()},
                    min(limit, rows - start),
                    timeout_s,
                )
            )
            for start in range(0, rows, limit)
        ]
        try:
            results = await asyncio.gather(*chunks)
        except BaseException:
            for chunk in chunks:
                chunk.cancel()
            raise
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def _refuse(self) -> None:
        if not self._accepting:
            raise NotReady(f"model {self.name!r} is not accepting requests")
        self.metrics.outcome("overloaded")
        raise Overloaded(
            f"model {self.name!r} is overloaded: {self._queued_rows} rows queued, "
            f"limit {self._max_queue_rows}"
        )

    async def _run_now(self, job: _Job) -> Tensors:
        """Nothing to batch with: compute in the caller's own task (no hand-off to the worker and back)."""
        self._running_batches += 1
        self._idle.clear()
        try:
            await self._run([job], job[_ROWS], self._runners[0], self._executors[0])
        finally:
            self._running_batches -= 1
            self._check_idle()
        return job[_FUTURE].result()

    def _runs_at_once(self, rows: int) -> bool:
        """Whether a request runs in its caller's task, skipping the queue: nothing is queued or running, its
        batch would run on the loop thread anyway, and the last ``LONE_BATCHES`` batches each held one request
        (one client at a time, or a host such as grpc.aio that hands the server one call per loop pass: no batch
        forms). Every ``LONE_BATCHES``-th such request still goes through the worker: the probe. Requests that
        arrive together queue behind it, their batch holds several, and batching resumes."""
        if self._queued_rows or self._running_batches or not self.cost.runs_inline(self._bucket(rows)):
            return False
        if not self.policy.enabled:
            return True
        if self._lone_batches < LONE_BATCHES or self.policy.max_queue_delay_s > 0:
            return False  # (a queue delay is the user's order to wait for company: every request waits it)
        self._direct_runs += 1
        return self._direct_runs % LONE_BATCHES != 0

    def _drop(self, job: _Job) -> None:
        """Account for a job just taken from its queue that will not be computed: cancelled by its caller (who
        went away) or past its deadline (failed here)."""
        self._queued_rows -= job[_ROWS]
        if job[_FUTURE].cancelled():
            self.metrics.outcome("cancelled")
        else:
            self._expire(job)
        self._check_idle()

    def _expire(self, job: _Job) -> None:
        future, _, _, enqueued, deadline = job
        if future.done():
            return
        self.metrics.outcome("deadline")
        future.set_exception(
            DeadlineExceeded(
                f"model {self.name!r}: no result within the deadline of {deadline - enqueued:g} s"
            )
        )

    async def _sweep_deadlines(self, interval_s: float = 0.02) -> None:
        """Fail requests past their deadline, queued or running (a hung model must not hold callers forever).
        One sweep every ``interval_s`` costs less than a timer per request, and deadlines are coarse anyway."""
        loop = self._loop
        while True:
            await asyncio.sleep(interval_s)
            now = loop.time()
            for key, queue in list(self._queues.items()):
                # Oldest first: requests behind a live one are younger (a cancelled one behind it is dropped when
                # a batch reaches it).
                while queue and (queue[0][_FUTURE].cancelled() or queue[0][_DEADLINE] <= now):
                    self._drop(queue.popleft())
                if not queue:
                    del self._queues[key]
            for batch in self._running:
                for job in batch:
                    if job[_DEADLINE] <= now:
                        self._expire(job)

    def _check_idle(self) -> None:
        if self._queued_rows == 0 and self._running_batches == 0:
            self._idle.set()

    def _take_batch(self) -> tuple[list[_Job], int]:
        """Pop the next batch and its rows: jobs sharing the shape key of the oldest waiting job, up to the row
        limit."""
        limit = self.cost.next_limit() if self.policy.enabled else 1  # batching off: every request runs alone
        queues = self._queues
        while queues:
            key = (
                min(queues, key=lambda k: queues[k][0][_ENQUEUED]) if len(queues) > 1 else next(iter(queues))
            )
            queue = queues[key]
            batch, rows = [], 0
            while queue:
                job = queue.popleft()
                if job[_FUTURE].cancelled():  # the caller went away: not computed, not counted
                    self._drop(job)
                    continue
                if rows and rows + job[_ROWS] > limit:  # a job alone always fits: infer() split it
                    queue.appendleft(job)
                    break
                batch.append(job)
                rows += job[_ROWS]
            self._queued_rows -= rows
            if not queue:
                del queues[key]
            if batch:
                return batch, rows
        return [], 0

    async def _worker(self, runner: Runner, executor: ThreadPoolExecutor) -> None:
        loop = self._loop
        delay = self.policy.max_queue_delay_s
        while True:
            if self._queued_rows == 0:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if delay > 0 and self.policy.enabled and self._queued_rows < self.cost.row_cap:
                oldest = min(queue[0][_ENQUEUED] for queue in self._queues.values())
                wait = oldest + delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            elif self.policy.enabled and self.cost.runs_inline(self._queued_rows):
                await self._gather_arrived()
            batch, rows = self._take_batch()
            if not batch:
                self._check_idle()
                continue
            self._lone_batches = self._lone_batches + 1 if len(batch) == 1 else 0
            self._running_batches += 1
            self._running.append(batch)
            try:
                await self._run(batch, rows, runner, executor)
            finally:
                self._running.remove(batch)
                self._running_batches -= 1
                self._check_idle()

    async def _gather_arrived(self) -> None:
        """Before a batch that will block the loop, let the loop read the requests that have already arrived.

        While an inline batch computes, nothing is read; the answers then go out one by one and the clients'
        next requests arrive while later answers are still being written. Taking a batch at the first request
        splits the clients into a big batch and a trail of small ones (one row costs ~3x a row of a batch of
        16 on a 1.6M-parameter MLP). So: yield to the loop while each pass brings new rows, up to the row cap.
        No time window: a pass that brings nothing ends it, so a lone client waits two loop passes; once
        ``FRUITLESS_GATHERS`` gathers in a row brought nothing, only every ``FRUITLESS_GATHERS``-th batch still
        gathers (the probe that notices more clients), so one client at a time pays nothing for the batcher."""
        # (Once batches hold one request each, most requests skip the queue and the worker sees the probes: those
        # always gather.)
        if self._fruitless_gathers >= FRUITLESS_GATHERS and self._lone_batches < LONE_BATCHES:
            self._fruitless_gathers += 1
            if self._fruitless_gathers % FRUITLESS_GATHERS:
                return
        before = self._queued_rows
        if before >= self.cost.row_cap:
            return  # a full batch is already waiting
        for _ in range(GATHER_PASSES):
            seen = self._queued_rows
            # Two yields: the first lets the loop poll its sockets, the second lets the request handlers that
            # poll scheduled run (they are queued behind this worker).
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if self._queued_rows == seen or self._queued_rows >= self.cost.row_cap:
                break
        if self._queued_rows > before:
            self._fruitless_gathers = 0
        elif self._fruitless_gathers < FRUITLESS_GATHERS:
            self._fruitless_gathers += 1

    async def _run(self, batch: list[_Job], rows: int, runner: Runner, executor: ThreadPoolExecutor) -> None:
        self.metrics.queue_wait(self._loop.time() - batch[0][_ENQUEUED])
        if len(batch) == 1:
            merged = batch[0][_INPUTS]
        else:
            merged = {
                name: np.concatenate([job[_INPUTS][name] for job in batch]) for name in batch[0][_INPUTS]
            }
        padded = self._bucket(rows)
        if padded > rows:
            merged = {name: _pad_rows(array, padded - rows) for name, array in merged.items()}
        try:
            if self.cost.runs_inline(padded):
                # Handing a batch to a thread and back costs ~50-150 us of loop time; a batch known to take
                # less than that runs on the loop thread instead (it would block the loop longer otherwise).
                outputs, elapsed, cpu = _timed(runner, merged)
            else:
                outputs, elapsed, cpu = await self._loop.run_in_executor(executor, _timed, runner, merged)
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != padded:
                    raise BackendError(
                        f"model {self.name!r} broke the batch contract: output {name!r} has shape "
                        f"{list(array.shape)} for a batch of {padded} rows"
                    )
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, ServingError)
                else BackendError(
                    f"model {self.name!r} failed on a batch of {rows} rows: {type(exc).__name__}: {exc}"
                )
            )
            log.error("%s", error.message, exc_info=not isinstance(exc, ServingError))
            failed = [job[_FUTURE] for job in batch if not job[_FUTURE].done()]
            for future in failed:
                future.set_exception(error)
            self.metrics.outcome("error", len(failed))
            return
        self.cost.observe(padded, cpu)
        self.metrics.batch(rows, padded, elapsed)
        if len(batch) == 1 and padded == rows:
            future = batch[0][_FUTURE]
            if not future.done():
                future.set_result(outputs)
                self.metrics.outcome("ok", 1)
            return
        offset, answered = 0, 0
        if len(outputs) == 1 and rows == len(batch):  # the common case: one output, one row a request
            [(name, array)] = outputs.items()
            # (Each row a view made in C by iterating, not a slice made per request.)
            for job, row in zip(batch, array[:rows, None], strict=True):
                try:
                    job[_FUTURE].set_result({name: row})
                except asyncio.InvalidStateError:  # (cheaper than asking first: rare) its caller went away
                    answered -= 1
            answered += rows
        elif len(outputs) == 1:  # (without a dict comprehension per request)
            [(name, array)] = outputs.items()
            for future, _, job_rows, _, _ in batch:
                end = offset + job_rows
                if not future.done():
                    future.set_result({name: array[offset:end]})
                    answered += 1
                offset = end
        else:
            for future, _, job_rows, _, _ in batch:
                end = offset + job_rows
                if not future.done():
                    future.set_result({name: array[offset:end] for name, array in outputs.items()})
                    answered += 1
                offset = end
        self.metrics.outcome("ok", answered)

    def _bucket(self, rows: int) -> int:
        for size in self._buckets:
            if size >= rows:
                return size
        return rows


def _timed(runner: Runner, inputs: Tensors) -> tuple[Tensors, float, float]:
    """(outputs, wall seconds, CPU seconds of this thread): the cost model learns from CPU time."""
    wall, cpu = time.perf_counter(), time.thread_time()
    outputs = runner(inputs)
    return outputs, time.perf_counter() - wall, time.thread_time() - cpu


def _pad_rows(array: np.ndarray, extra: int) -> np.ndarray:
    # Repeat the last row rather than pad with zeros: zeros can be out of range for a model (NaN, inf).
    return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)])
