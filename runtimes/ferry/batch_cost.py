"""What batches cost, learned from the batches the batcher runs (and the predictor's warm-up batches), and the
two decisions taken from it:

- **where a batch runs**: handing a batch to a thread and back costs ~50-150 us of event-loop time, so a batch
  size measured to take less than ``inline_below_s`` of CPU runs on the loop thread instead;
- **how large batches grow** (``adaptive``, for CPU models): a convolution over large images whose batch outgrows
  the caches computes fewer rows per second, not more, so batches stop at the largest size that was measured to
  cost no more than ``SLOWER_PER_ROW`` times the cheapest per row; every ``EXPLORE_EVERY``-th batch may take one
  size more, so a limit learned from few batches can still climb.

Sizes are grouped in power-of-two buckets (``rows.bit_length()``: 1, 2-3, 4-7, 8-15, ...). Costs are CPU seconds
of the running thread, not wall seconds: on a busy core a threaded run's wall time includes waiting for the GIL
and being preempted, which would keep a tiny model from ever qualifying to run inline. Knows no event loop."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

EXPLORE_EVERY = 16  # with a learned limit, every 16th batch may take one bucket more
SLOWER_PER_ROW = 1.25  # a bucket this much dearer per row than the cheapest is not worth forming


def bucket_of(rows: int) -> int:
    return rows.bit_length()


class BatchCostModel:
    def __init__(
        self, max_rows: int, inline_below_s: float = 0.0, adaptive: bool = False, name: str = "model"
    ):
        self.max_rows = max_rows
        self.inline_below_s = inline_below_s
        self.adaptive = adaptive
        self.name = name
        #: Recent CPU seconds of a whole batch, per bucket: where a batch of that size runs.
        self.batch_seconds: dict[int, float] = {}
        #: The lowest recent CPU seconds per row, per bucket: how large batches should grow.
        self.row_seconds: dict[int, float] = {}
        #: The most rows a batch should take (``max_rows`` until a larger bucket is measured dearer per row).
        self.row_cap = max_rows
        self._batches_limited = 0

    def observe(self, rows: int, cpu_seconds: float) -> None:
        """Learn from one batch of ``rows`` rows that took ``cpu_seconds`` of CPU."""
        bucket = bucket_of(rows)
        previous = self.batch_seconds.get(bucket)
        self.batch_seconds[bucket] = cpu_seconds if previous is None else 0.8 * previous + 0.2 * cpu_seconds
        if self.adaptive:
            self._learn_row_cost(bucket, cpu_seconds / rows)

    def runs_inline(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows is measured cheap enough to run on the event loop's thread."""
        return self.batch_seconds.get(bucket_of(rows), float("inf")) < self.inline_below_s

    def next_limit(self) -> int:
        """Rows the next batch may take: the learned cap, or one bucket more every ``EXPLORE_EVERY``-th batch."""
        if self.row_cap >= self.max_rows:
            return self.max_rows
        self._batches_limited += 1
        if self._batches_limited % EXPLORE_EVERY == 0:
            return min(self.max_rows, 2 * self.row_cap + 1)
        return self.row_cap

    def _learn_row_cost(self, bucket: int, seconds_per_row: float) -> None:
        # Falls at once, rises slowly: what inflates a CPU-time sample (a first call's initialisation, a
        # garbage collection, a cache another process just emptied) passes, and no sample is ever too cheap.
        previous = self.row_seconds.get(bucket)
        if previous is None or seconds_per_row < previous:
            self.row_seconds[bucket] = seconds_per_row
        else:
            self.row_seconds[bucket] = 0.9 * previous + 0.1 * seconds_per_row
        within = SLOWER_PER_ROW * min(self.row_seconds.values())
        # The largest bucket within SLOWER_PER_ROW of the cheapest: fixed per-batch costs make small batches
        # dearer per row, so "good" is a band, and its top end is what batches should grow to. (One plain loop, no
        # generators: this runs after every batch, right after the model has swept the caches.)
        good = largest = 0
        for measured, cost in self.row_seconds.items():
            largest = max(largest, measured)
            if cost <= within:
                good = max(good, measured)
        cap = min(self.max_rows, (1 << good) - 1) if largest > good else self.max_rows
        if cap != self.row_cap:
            log.info(
                "model %s: batches of up to %d rows (measured CPU per row: %s)",
                self.name,
                cap,
                ", ".join(
                    f"{1 << (b - 1)}-{(1 << b) - 1} rows {cost * 1e6:.1f} us"
                    for b, cost in sorted(self.row_seconds.items())
                ),
            )
            self.row_cap = cap
