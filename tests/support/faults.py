"""Kill a dependency under load and bring it back: what callers of the service in front of it see, phase by
phase, and what they must see. Shared by the transformer's and the explainer's fault tests, with the check that
such a service has the transports' limits and budget."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: Where the reliability tests write their figures (docs/RELIABILITY.md quotes them).
RESULTS = Path(os.environ.get("FERRY_RELIABILITY_OUT", "/tmp/ferry-reliability"))


@dataclass
class Outcome:
    at: float  # when it was sent
    status: int  # 0: the client itself gave up (no answer in time)
    seconds: float
    body: str


@dataclass
class Timeline:
    killed_at: float = 0.0
    exited_at: float = 0.0
    restart_began: float = 0.0
    restarted_at: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)

    def phase(self, start: float, end: float) -> list[Outcome]:
        """The calls sent at ``start`` or later and answered by ``end``."""
        return [o for o in self.outcomes if start <= o.at and o.at + o.seconds <= end]

    @property
    def before(self) -> list[Outcome]:
        return self.phase(0, self.killed_at)

    @property
    def down(self) -> list[Outcome]:
        """While the dependency was dead (calls in flight at the kill, or during its start-up, are left out)."""
        return self.phase(self.killed_at, self.restart_began)

    @property
    def after(self) -> list[Outcome]:
        return self.phase(self.restarted_at, float("inf"))

    def summary(self) -> dict:
        phases = {"before": self.before, "down": self.down, "after": self.after}
        return {
            name: {
                "statuses": _count(o.status for o in items),
                "max_s": round(max((o.seconds for o in items), default=0.0), 3),
            }
            for name, items in phases.items()
        }

    def save(self, name: str) -> dict:
        """The summary (with the recovery time), written to RESULTS/<name>.json and printed."""
        summary = self.summary()
        summary["recovered_within_s"] = round(self.recovered_within(), 3)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2))
        print(name, summary)
        return summary

    def recovered_within(self) -> float:
        """Seconds from the dependency being back to the first of an unbroken run of successes to the end."""
        after = self.after
        first_good = len(after)
        while first_good > 0 and after[first_good - 1].status == 200:
            first_good -= 1
        if first_good == len(after):
            return float("inf")
        return after[first_good].at - self.restarted_at


def _count(statuses) -> dict:
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


def kill_and_restart_under_load(
    send: Callable[[], tuple[int, str]],
    dependency,
    restart: Callable[[], object],
    *,
    clients: int = 4,
    stop_signal: int = signal.SIGKILL,
    before_s: float = 2.0,
    down_s: float = 3.0,
    after_s: float = 4.0,
) -> Timeline:
    """``clients`` threads call ``send`` in a loop; ``dependency`` is sent ``stop_signal`` (SIGKILL, or SIGTERM for
    a graceful stop) after ``before_s`` and waited for, ``restart()`` (which returns once it is ready again) runs
    ``down_s`` after it exited, and the load goes on ``after_s`` more."""
    timeline, stop = Timeline(), threading.Event()
    started = time.monotonic()
    lock = threading.Lock()

    def client():
        while not stop.is_set():
            t0 = time.monotonic()
            status, body = send()
            with lock:
                timeline.outcomes.append(Outcome(t0 - started, status, time.monotonic() - t0, body[:300]))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(before_s)
    timeline.killed_at = time.monotonic() - started
    dependency.stop(stop_signal)
    timeline.exited_at = time.monotonic() - started
    time.sleep(down_s)
    timeline.restart_began = time.monotonic() - started
    restart()
    timeline.restarted_at = time.monotonic() - started
    time.sleep(after_s)
    stop.set()
    for thread in threads:
        thread.join(60)
    return timeline


def post(client, url: str, body: dict) -> tuple[int, str]:
    """(status, text) of one POST with an httpx client; status 0 when the client gave up waiting."""
    import httpx

    try:
        response = client.post(url, json=body)
        return response.status_code, response.text
    except httpx.TimeoutException:
        return 0, "client timeout"


def restart_under_load(
    front,
    url: str,
    body: dict,
    start_dependency: Callable[[], object],
    dependency,
    *,
    timeout_s: float,
    name: str,
    **load,
) -> tuple[Timeline, dict]:
    """``kill_and_restart_under_load`` with POSTs of ``body`` to ``url`` (a client that waits ``timeout_s``) as the
    load and ``start_dependency()`` as the restart; then ``front``, ``dependency`` and its restarts are stopped.
    Returns the timeline and its summary, saved as ``name``."""
    import httpx

    client = httpx.Client(timeout=timeout_s)
    restarted = []
    try:
        timeline = kill_and_restart_under_load(
            lambda: post(client, url, body), dependency, lambda: restarted.append(start_dependency()), **load
        )
    finally:
        client.close()
        front.stop()
        for proc in [dependency, *restarted]:
            proc.stop()
    return timeline, timeline.save(name)


def assert_down_in_words_then_recovered(
    timeline: Timeline, summary: dict, timeout_s: float, worded: tuple[int, ...] = (502, 503)
) -> None:
    """All 200 before the kill; while the predictor was down, 502 or 503 within its timeout ``timeout_s`` (the
    answers with a status in ``worded`` naming the predictor); 200 again within 2 s of its return, by itself."""
    assert set(summary["before"]["statuses"]) == {200}, summary
    down = timeline.down
    assert down and all(o.status in (502, 503) for o in down), [(o.status, o.body) for o in down[:5]]
    assert all("predictor" in o.body for o in down if o.status in worded)  # the message says what failed
    assert summary["down"]["max_s"] <= timeout_s + 0.5, summary
    assert timeline.recovered_within() <= 2.0, summary


def assert_rolling_restart_lost_nothing(
    timeline: Timeline, summary: dict, drained_within_s: float
) -> list[Outcome]:
    """All 200 before the SIGTERM and in the ``drained_within_s`` after it (the calls of that window are returned);
    every call at all 200, or (once the dependency was gone) a failure in words: 502 or 503, or 504 naming the
    dependency (a call a gRPC channel held while it reconnected, past the front's timeout); 200 again within 2 s
    of its return."""
    draining = timeline.phase(timeline.killed_at, timeline.killed_at + drained_within_s)
    assert set(summary["before"]["statuses"]) == {200}, summary
    assert draining and all(o.status == 200 for o in draining), [
        (o.status, o.body) for o in draining if o.status != 200
    ][:5]
    unexpected = [
        o
        for o in timeline.outcomes
        if o.status not in (200, 502, 503) and not (o.status == 504 and "predictor" in o.body)
    ]
    assert not unexpected, (summary, timeline.killed_at, timeline.exited_at, unexpected[:5])
    assert timeline.recovered_within() <= 2.0, summary
    return draining


#: The flags ``assert_transport_limits`` expects its server to run with.
LIMIT_FLAGS = ("--max_request_headers=10", "--max_connections=3")


def assert_transport_limits(server) -> None:
    """``server``, started with ``LIMIT_FLAGS``, serves on Ferry's transports with their limits: a head over the
    limit is a 431, a connection over the cap a readable 503, and the request budget is reported (none held)."""
    import httpx

    headers = {f"x-h{i}": "v" for i in range(20)}
    assert httpx.get(f"{server.url}/v2/health/live", headers=headers, timeout=10).status_code == 431
    held = [socket.create_connection(("127.0.0.1", server.http_port), timeout=5) for _ in range(3)]
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as extra:
        assert b"limit of 3 open connections" in extra.recv(4096)
    for sock in held:
        sock.close()
    time.sleep(0.2)
    assert "ferry_buffered_request_bytes 0.0" in httpx.get(f"{server.url}/metrics", timeout=10).text
