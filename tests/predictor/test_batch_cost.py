"""The batcher's cost model on its own: where batches run and how large they grow, from the costs it is told."""

from __future__ import annotations

from ferry.batch_cost import EXPLORE_EVERY, BatchCostModel

US = 1e-6


def limits(model: BatchCostModel, batches: int) -> list[int]:
    return [model.next_limit() for _ in range(batches)]


def test_only_a_size_measured_cheap_runs_inline():
    model = BatchCostModel(64, inline_below_s=100 * US)
    assert not model.runs_inline(1)  # never measured: it runs on a thread until it is
    model.observe(1, 20 * US)
    model.observe(32, 800 * US)
    assert model.runs_inline(1)
    assert not model.runs_inline(32) and not model.runs_inline(63)  # 32-63 share a bucket, measured dear
    assert not model.runs_inline(2)  # 2-3 was never measured


def test_inline_off_by_default_whatever_is_measured():
    model = BatchCostModel(64)
    model.observe(1, 1 * US)
    assert not model.runs_inline(1)


def test_a_batch_size_that_became_dear_leaves_the_loop():
    model = BatchCostModel(64, inline_below_s=100 * US)
    model.observe(4, 20 * US)
    assert model.runs_inline(4)
    for _ in range(
        10
    ):  # the model got slower (say, a bigger input): the estimate follows within a few batches
        model.observe(4, 400 * US)
    assert not model.runs_inline(4)


def test_without_adaptation_batches_always_grow_to_the_maximum():
    model = BatchCostModel(64)
    model.observe(1, 10 * US)
    model.observe(64, 64 * 100 * US)  # 10x dearer per row, ignored
    assert set(limits(model, 40)) == {64}


def test_batches_stop_below_the_bucket_that_costs_more_per_row_and_explore_it_now_and_then():
    model = BatchCostModel(64, adaptive=True)
    model.observe(1, 40 * US)  # fixed costs make one row dear
    model.observe(8, 8 * 20 * US)
    model.observe(64, 64 * 60 * US)  # 3x the cheapest per row: past a cliff
    assert model.row_cap == 15  # the top of the last cheap bucket, 8-15
    seen = limits(model, 2 * EXPLORE_EVERY)
    assert seen.count(31) == 2 and set(seen) == {15, 31}  # one bucket more every EXPLORE_EVERY-th batch


def test_the_band_of_good_sizes_reaches_its_largest_member():
    model = BatchCostModel(64, adaptive=True)
    model.observe(8, 8 * 20 * US)
    model.observe(16, 16 * 24 * US)  # within 25 % of the cheapest: still worth forming
    model.observe(32, 32 * 40 * US)
    assert model.row_cap == 31


def test_cheaper_per_row_all_the_way_up_keeps_the_maximum():
    model = BatchCostModel(64, adaptive=True)
    for rows in (1, 2, 4, 8, 16, 32, 64):
        model.observe(rows, 200 * US + rows * 5 * US)  # a fixed cost per batch, amortised by bigger batches
    assert model.row_cap == 64 and set(limits(model, 20)) == {64}


def test_one_inflated_sample_does_not_cap_batches_but_a_lasting_cliff_does():
    model = BatchCostModel(64, adaptive=True)
    model.observe(8, 8 * 20 * US)
    model.observe(64, 64 * 20 * US)
    model.observe(64, 64 * 40 * US)  # one batch twice as slow (a garbage collection during it)
    assert model.row_cap == 64
    for _ in range(5):
        model.observe(64, 64 * 40 * US)  # every batch of that size is dear: it is the size, not a blip
    assert model.row_cap == 15


def test_a_bucket_measured_cheaper_lifts_the_cap_at_once():
    model = BatchCostModel(64, adaptive=True)
    model.observe(8, 8 * 20 * US)
    model.observe(32, 32 * 60 * US)
    assert model.row_cap == 15
    model.observe(32, 32 * 20 * US)  # explored again and cheap now (the cache the other process held is free)
    assert model.row_cap == 64
