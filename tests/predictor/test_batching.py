"""The dynamic batcher, black-box: real runners (numpy and onnxruntime), real concurrency on one event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from ferry.batching import FRUITLESS_GATHERS, LONE_BATCHES, BatchingPolicy, BatchMetrics, DynamicBatcher
from ferry.errors import BackendError, DeadlineExceeded, NotReady, Overloaded
from ferry.signature import Signature, TensorSpec

WEIGHTS = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)


class Recorder(BatchMetrics):
    def __init__(self):
        self.batches: list[tuple[int, int]] = []
        self.outcomes: list[str] = []

    def batch(self, rows, padded_rows, compute_seconds):
        self.batches.append((rows, padded_rows))

    def outcome(self, outcome, count=1):
        self.outcomes.extend([outcome] * count)


def matmul(inputs):
    return {"y": inputs["x"] @ WEIGHTS, "rows": inputs["x"][:, :1] * 0 + len(inputs["x"])}


async def count_loop_passes(passes: list[int]) -> None:
    """Counts the event loop's passes into ``passes[0]`` until cancelled: a request whose await lets no other task
    run adds none."""
    while True:
        passes[0] += 1
        await asyncio.sleep(0)


async def started(runner=matmul, instances=1, **policy) -> tuple[DynamicBatcher, Recorder]:
    metrics = Recorder()
    batcher = DynamicBatcher("m", [runner] * instances, BatchingPolicy(**policy), metrics)
    await batcher.start()
    return batcher, metrics


async def test_concurrent_callers_each_get_exactly_their_rows_and_batches_form():
    def slow(inputs):
        time.sleep(0.002)  # a busy instance, so requests queue up behind it
        return matmul(inputs)

    batcher, metrics = await started(slow, max_batch_size=64)
    xs = np.random.default_rng(1).normal(size=(500, 1, 4)).astype(np.float32)
    results = await asyncio.gather(*(batcher.infer({"x": x}, 1, 10) for x in xs))
    for x, result in zip(xs, results, strict=True):
        np.testing.assert_allclose(result["y"], x @ WEIGHTS, atol=1e-5)
    assert max(rows for rows, _ in metrics.batches) > 1
    assert sum(rows for rows, _ in metrics.batches) == 500
    assert all(rows <= 64 for rows, _ in metrics.batches)
    await batcher.stop()


async def test_requests_of_several_rows_and_oversized_requests_are_split_and_reassembled():
    batcher, metrics = await started(max_batch_size=8)
    x = np.arange(4 * 21, dtype=np.float32).reshape(21, 4)
    result = await batcher.infer({"x": x}, 21, 10)
    np.testing.assert_allclose(result["y"], x @ WEIGHTS, rtol=1e-6)
    assert [rows for rows, _ in metrics.batches] == [8, 8, 5]
    await batcher.stop()


async def test_only_matching_shapes_share_a_batch():
    seen = []

    def runner(inputs):
        seen.append(inputs["x"].shape)
        time.sleep(0.001)
        return {"y": inputs["x"].sum(axis=tuple(range(1, inputs["x"].ndim)))}

    batcher, _ = await started(runner)
    a = [batcher.infer({"x": np.ones((1, 3), np.float32)}, 1, 10) for _ in range(20)]
    b = [batcher.infer({"x": np.ones((1, 5), np.float32)}, 1, 10) for _ in range(20)]
    results = await asyncio.gather(*a, *b)
    assert all(r["y"][0] == 3 for r in results[:20]) and all(r["y"][0] == 5 for r in results[20:])
    assert {shape[1] for shape in seen} == {3, 5}
    await batcher.stop()


async def test_a_fixed_signatures_key_is_the_batchers_own():
    """The predictor hands the batcher its signature's key instead of one built per request: requests keyed
    either way must share batches (and a signature with dynamic or BYTES rows has no fixed key)."""
    fixed = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 3)),))
    assert Signature((TensorSpec("x", "FP32", (-1, -1)),), ()).fixed_batch_key is None
    assert Signature((TensorSpec("x", "BYTES", (-1, 1)),), ()).fixed_batch_key is None

    def slow(inputs):
        time.sleep(0.005)
        return matmul(inputs)

    batcher, metrics = await started(slow, max_batch_size=64)
    xs = np.random.default_rng(2).normal(size=(40, 1, 4)).astype(np.float32)
    calls = [
        batcher.infer({"x": x}, 1, 10, fixed.fixed_batch_key if i % 2 else None) for i, x in enumerate(xs)
    ]
    results = await asyncio.gather(*calls)
    for x, result in zip(xs, results, strict=True):
        np.testing.assert_allclose(result["y"], x @ WEIGHTS, atol=1e-5)
    # Under two different keys the callers would split into two queues of 20: at most 20 rows a batch.
    assert max(rows for rows, _ in metrics.batches) >= 39
    await batcher.stop()


# CPU seconds a cliff model spends per row: large against what a batch costs besides its rows (~5-30 us of
# numpy calls and Python, more on a loaded machine), so a 1-row batch still measures about one row's cost.
ROW_S = 100e-6


def spin(seconds: float) -> None:
    """Burn CPU time (the batcher measures CPU, not wall, time per row)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def run_load(batcher, callers: int, rounds: int) -> None:
    rng = np.random.default_rng(3)
    for _ in range(rounds):
        xs = rng.normal(size=(callers, 1, 4)).astype(np.float32)
        results = await asyncio.gather(*(batcher.infer({"x": x}, 1, 30) for x in xs))
        for x, result in zip(xs, results, strict=True):
            np.testing.assert_allclose(result["y"], x @ WEIGHTS, atol=1e-5)


async def test_batches_stop_growing_past_the_size_that_costs_more_per_row():
    """A model that computes 3x slower per row once a batch exceeds 16 rows (a batch outgrowing the caches).
    After lone requests (as after the predictor's warm-up, the batcher knows a 1-row batch) it forms full
    64-row batches, learns they cost more per row, caps, climbs back up one bucket at a time and settles on
    at most 15 rows (the top of the last cheap bucket, 8-15), exploring 16-31 only now and then; every caller
    still gets its own rows."""

    def cliff(inputs):
        rows = len(inputs["x"])
        spin(rows * ROW_S * (1 if rows <= 16 else 3))
        return matmul(inputs)

    batcher, metrics = await started(cliff, max_batch_size=64, adaptive_max_batch=True)
    await run_load(batcher, callers=1, rounds=5)
    await run_load(batcher, callers=64, rounds=40)
    late = [rows for rows, _ in metrics.batches[-100:]]
    assert sum(rows > 15 for rows in late) <= len(late) // 8, late  # only the exploring batches
    assert max(late) <= 31 and sorted(late)[len(late) // 2] >= 8, late  # settled at 8-15, not 1
    await batcher.stop()


async def test_a_cliff_inside_a_bucket_is_judged_by_the_sizes_the_bucket_runs_at():
    """Cheap up to 18 rows, then dearer with every row (3x at 31): the 16-31 bucket is cheap only at its
    bottom. Batches are as full as the cap allows, so that bucket mostly runs near 31 rows; one batch of 16-18
    rows must not make it look cheap and lift every batch to 31."""

    def steep(inputs):
        rows = len(inputs["x"])
        spin(rows * ROW_S * (1 if rows <= 18 else 1 + (rows - 18) / 6.5))
        return matmul(inputs)

    batcher, metrics = await started(steep, max_batch_size=64, adaptive_max_batch=True)
    batcher.cost.observe(17, 17 * ROW_S)  # a cheap batch at the bottom of the bucket, as arrivals may form
    await run_load(batcher, callers=1, rounds=5)
    await run_load(batcher, callers=64, rounds=40)
    late = [rows for rows, _ in metrics.batches[-100:]]
    assert sum(rows > 15 for rows in late) <= len(late) // 8, late
    await batcher.stop()


async def test_batches_keep_growing_while_each_row_costs_less():
    def amortised(inputs):
        spin(200e-6 + len(inputs["x"]) * 5e-6)  # a fixed cost per batch: bigger batches are cheaper per row
        return matmul(inputs)

    batcher, metrics = await started(amortised, max_batch_size=64, adaptive_max_batch=True)
    await run_load(batcher, callers=64, rounds=10)
    assert max(rows for rows, _ in metrics.batches[-20:]) == 64
    await batcher.stop()


async def test_batches_are_padded_to_preferred_sizes_and_padding_is_stripped():
    shapes = []

    def runner(inputs):
        shapes.append(len(inputs["x"]))
        time.sleep(0.002)
        return matmul(inputs)

    batcher, metrics = await started(runner, max_batch_size=16, preferred_batch_sizes=(4, 16))
    xs = np.random.default_rng(2).normal(size=(11, 1, 4)).astype(np.float32)
    results = await asyncio.gather(*(batcher.infer({"x": x}, 1, 10) for x in xs))
    for x, r in zip(xs, results, strict=True):
        np.testing.assert_allclose(r["y"], x @ WEIGHTS, atol=1e-5)
        assert r["y"].shape == (1, 3)
    assert set(shapes) <= {4, 16}
    assert any(padded > rows for rows, padded in metrics.batches)
    await batcher.stop()


async def test_a_single_output_models_one_row_callers_each_get_their_own_row_of_a_padded_batch():
    # One output and one row per request (the common case, answered without a dict comprehension per caller):
    # each caller gets exactly its own row, with the padding dropped and a cancelled caller skipped.
    gate = threading.Event()

    def runner(inputs):
        gate.wait(5)
        return {"y": inputs["x"] @ WEIGHTS}

    batcher, metrics = await started(runner, max_batch_size=16, preferred_batch_sizes=(16,))
    first = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 4), np.float32)}, 1, 10))
    await asyncio.sleep(0.02)  # running: the next callers queue behind it and form one batch
    xs = np.random.default_rng(3).normal(size=(11, 1, 4)).astype(np.float32)
    callers = [asyncio.ensure_future(batcher.infer({"x": x}, 1, 10)) for x in xs]
    await asyncio.sleep(0.01)
    callers[4].cancel()
    gate.set()
    await first
    for index, (x, caller) in enumerate(zip(xs, callers, strict=True)):
        if index == 4:
            assert caller.cancelled()
            continue
        result = await caller
        assert result["y"].shape == (1, 3)
        np.testing.assert_allclose(result["y"], x @ WEIGHTS, atol=1e-5)
    assert metrics.batches[-1] == (10, 16)  # the cancelled row left out, the batch padded to 16
    await batcher.stop()


async def test_queue_is_bounded_in_rows():
    gate = threading.Event()

    def blocked(inputs):
        gate.wait(5)
        return matmul(inputs)

    batcher, metrics = await started(blocked, max_batch_size=4, max_queue_rows=10)
    first = asyncio.ensure_future(batcher.infer({"x": np.ones((4, 4), np.float32)}, 4, 10))
    await asyncio.sleep(0.05)  # the first batch is now running, the queue is empty
    queued = [
        asyncio.ensure_future(batcher.infer({"x": np.ones((5, 4), np.float32)}, 5, 10)) for _ in range(2)
    ]
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="10 rows queued, limit 10"):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)
    gate.set()
    await asyncio.gather(first, *queued)
    assert "overloaded" in metrics.outcomes
    assert batcher.queued_rows == 0
    await batcher.stop()


async def test_deadline_expires_queued_request_and_the_batcher_keeps_serving():
    gate = threading.Event()

    def blocked(inputs):
        gate.wait(5)
        return matmul(inputs)

    batcher, metrics = await started(blocked)
    running = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10))
    await asyncio.sleep(0.02)
    with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.05 s"):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 0.05)
    assert batcher.queued_rows == 0  # the expired request left the queue
    assert metrics.outcomes == ["deadline"]  # counted once, as what it was (not also as cancelled)
    gate.set()
    await running
    assert (await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 1))["y"].shape == (1, 3)
    await batcher.stop()


async def test_cancelled_caller_leaves_the_queue_and_is_not_computed():
    gate, computed = threading.Event(), []

    def blocked(inputs):
        gate.wait(5)
        computed.append(len(inputs["x"]))
        return matmul(inputs)

    batcher, _ = await started(blocked)
    running = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10))
    await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(batcher.infer({"x": np.ones((7, 4), np.float32)}, 7, 10))
    await asyncio.sleep(0.01)
    assert batcher.queued_rows == 7
    waiting.cancel()
    # Taken out of the queue by the next deadline sweep (every 20 ms), not computed when the worker gets to it.
    await asyncio.sleep(0.06)
    assert batcher.queued_rows == 0
    gate.set()
    await running
    await asyncio.sleep(0.05)
    assert computed == [1]
    await batcher.stop()


async def test_cancelled_callers_between_live_ones_are_left_out_of_the_batch():
    gate, computed = threading.Event(), []

    def blocked(inputs):
        gate.wait(5)
        computed.append(inputs["x"][:, 0].tolist())
        return matmul(inputs)

    batcher, metrics = await started(blocked, max_batch_size=64)
    running = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 4), np.float32)}, 1, 10))
    await asyncio.sleep(0.02)
    queued = [
        asyncio.ensure_future(batcher.infer({"x": np.full((1, 4), i, np.float32)}, 1, 10))
        for i in (1, 2, 3, 4)
    ]
    await asyncio.sleep(0.01)
    queued[1].cancel()
    queued[3].cancel()
    gate.set()
    await running
    first, third = await queued[0], await queued[2]
    np.testing.assert_allclose(first["y"], np.full((1, 4), 1, np.float32) @ WEIGHTS, rtol=1e-6)
    np.testing.assert_allclose(third["y"], np.full((1, 4), 3, np.float32) @ WEIGHTS, rtol=1e-6)
    assert computed == [[0.0], [1.0, 3.0]]  # the cancelled rows were never computed
    assert metrics.outcomes.count("cancelled") == 2
    assert batcher.queued_rows == 0
    await batcher.stop()


async def test_a_failing_batch_fails_only_its_callers():
    calls = []

    def flaky(inputs):
        calls.append(inputs["x"][0, 0])
        if inputs["x"][0, 0] < 0:
            raise RuntimeError("boom")
        return matmul(inputs)

    batcher, _ = await started(flaky)
    with pytest.raises(BackendError, match="failed on a batch of 1 rows: RuntimeError: boom"):
        await batcher.infer({"x": -np.ones((1, 4), np.float32)}, 1, 10)
    ok = await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)
    np.testing.assert_allclose(ok["y"], np.ones((1, 4), np.float32) @ WEIGHTS, rtol=1e-6)
    await batcher.stop()


async def test_wrong_number_of_output_rows_is_a_backend_error():
    batcher, _ = await started(lambda inputs: {"y": np.zeros((1, 3), np.float32)})
    with pytest.raises(BackendError, match="broke the batch contract"):
        await batcher.infer({"x": np.ones((2, 4), np.float32)}, 2, 10)
    await batcher.stop()


async def test_several_instances_run_batches_concurrently():
    active, peak, lock = [0], [0], threading.Lock()

    def runner(inputs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return matmul(inputs)

    batcher, _ = await started(runner, instances=2, max_batch_size=1)
    await asyncio.gather(*(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10) for _ in range(6)))
    assert peak[0] == 2
    await batcher.stop()


async def test_batching_off_runs_every_request_alone():
    batcher, metrics = await started(enabled=False)
    await asyncio.gather(*(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10) for _ in range(20)))
    assert {rows for rows, _ in metrics.batches} == {1}
    await batcher.stop()


@pytest.mark.parametrize("inline", [True, False])
async def test_an_inline_batch_first_gathers_requests_arriving_in_the_next_loop_passes(inline):
    """Batches that block the loop (inline) wait while each loop pass brings new requests; threaded batches
    do not (the loop keeps reading while they compute), so there the first request goes alone."""
    batcher, metrics = await started(max_batch_size=64, inline_below_s=float("inf") if inline else 0.0)
    batcher.cost.observe(1, 1e-6)  # measured cheap: batches of this size run inline when the policy allows it

    async def arriving_after(passes: int):
        for _ in range(passes):
            await asyncio.sleep(0)  # one loop pass each, as requests read from sockets pass by pass
        return await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)

    await asyncio.gather(*(arriving_after(passes) for passes in range(6)))
    if inline:
        assert [rows for rows, _ in metrics.batches] == [6]
    else:
        assert metrics.batches[0][0] == 1 and sum(rows for rows, _ in metrics.batches) == 6
    await batcher.stop()


async def test_a_lone_client_stops_paying_for_the_gather_until_more_clients_arrive():
    """One client at a time: each inline batch's gather finds nothing, so after a few it is skipped (the request
    is answered in fewer loop passes); a probe every few batches notices clients arriving again and batches them."""
    batcher, metrics = await started(max_batch_size=64, inline_below_s=float("inf"))
    batcher.cost.observe(1, 1e-6)
    passes = [0]
    counter = asyncio.ensure_future(count_loop_passes(passes))

    async def lone_request() -> int:
        start = passes[0]
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)
        return passes[0] - start

    costs = [await lone_request() for _ in range(3 * FRUITLESS_GATHERS)]
    assert min(costs[FRUITLESS_GATHERS:]) < min(costs[:FRUITLESS_GATHERS]), costs

    async def arriving_after(passes: int):
        for _ in range(passes):
            await asyncio.sleep(0)
        return await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)

    before = len(metrics.batches)
    for _ in range(FRUITLESS_GATHERS):  # waves of 6 clients, arriving pass by pass
        await asyncio.gather(*(arriving_after(passes) for passes in range(6)))
    waves = [rows for rows, _ in metrics.batches[before:]]
    assert waves[-1] == 6 and waves.count(6) >= FRUITLESS_GATHERS // 2, waves  # gathered again
    counter.cancel()
    await batcher.stop()


@pytest.mark.parametrize("enabled", [True, False])
async def test_with_nothing_to_batch_with_a_request_runs_in_its_callers_task(enabled):
    """Once batches hold one request each (one client at a time, or a host such as grpc.aio that hands over one call
    per loop pass), an inline request skips the queue: its caller's task computes it, so awaiting it lets no other
    task run. With batching on, every LONE_BATCHES-th request still goes through the worker, the probe; and
    requests arriving together batch again at once."""
    batcher, metrics = await started(max_batch_size=64, inline_below_s=float("inf"), enabled=enabled)
    batcher.cost.observe(1, 1e-6)
    passes = [0]
    counter = asyncio.ensure_future(count_loop_passes(passes))
    await asyncio.sleep(0)
    x = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)

    async def lone_request() -> int:
        start = passes[0]
        result = await batcher.infer({"x": x}, 1, 10)
        np.testing.assert_allclose(result["y"], x @ WEIGHTS, rtol=1e-6)
        return passes[0] - start

    for _ in range(LONE_BATCHES if enabled else 0):
        await lone_request()
    costs = [await lone_request() for _ in range(3 * LONE_BATCHES)]
    if enabled:
        assert costs.count(0) == 3 * (LONE_BATCHES - 1), costs  # all but the probes
    else:
        assert costs == [0] * len(costs)
    assert metrics.outcomes.count("ok") == len(metrics.batches) == (4 if enabled else 3) * LONE_BATCHES
    if enabled:
        # Clients arriving together again: fewer than LONE_BATCHES run alone before the probe's batch takes the
        # rest; from then on every burst is one batch.
        before = len(metrics.batches)
        bursts = [await asyncio.gather(*(lone_request() for _ in range(16))) for _ in range(6)]
        sizes = [rows for rows, _ in metrics.batches[before:]]
        assert len(sizes) < LONE_BATCHES + 6 and sizes[-5:] == [16] * 5, sizes
        assert sum(sizes) == 6 * 16 and len(bursts) == 6
    counter.cancel()
    await batcher.stop()


async def test_with_a_queue_delay_every_request_waits_it_even_alone():
    """A queue delay is the user's choice to wait for company: lone requests do not skip the queue."""
    batcher, _ = await started(max_batch_size=64, inline_below_s=float("inf"), max_queue_delay_s=0.005)
    batcher.cost.observe(1, 1e-6)
    waits = []
    for _ in range(3 * LONE_BATCHES):
        started_at = time.perf_counter()
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)
        waits.append(time.perf_counter() - started_at)
    assert min(waits) >= 0.004, waits
    await batcher.stop()


async def test_queue_delay_waits_for_a_fuller_batch():
    batcher, metrics = await started(max_batch_size=64, max_queue_delay_s=0.05)
    first = asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10))
    await asyncio.sleep(0.01)
    rest = [batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10) for _ in range(9)]
    await asyncio.gather(first, *rest)
    assert metrics.batches[0][0] == 10
    await batcher.stop()


async def test_stop_drains_queued_work_then_refuses_new_work():
    def slow(inputs):
        time.sleep(0.01)
        return matmul(inputs)

    batcher, _ = await started(slow, max_batch_size=2)
    pending = [
        asyncio.ensure_future(batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)) for _ in range(10)
    ]
    await asyncio.sleep(0)
    await batcher.stop()
    assert all(p.done() and p.exception() is None for p in pending)
    with pytest.raises(NotReady):
        await batcher.infer({"x": np.ones((1, 4), np.float32)}, 1, 10)
