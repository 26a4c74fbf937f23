"""Poller: schedule, backoff within the interval, Retry-After, concurrency bound, last good data."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from exporter.collectors.dap_statistics import DapStatistics
from exporter.model import PollError, Snapshot
from exporter.poller import Poller

INTERVAL = 900.0


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_795_435_200.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class FakeSource:
    """Returns scripted outcomes in order (the last one repeats) and records when it was called."""

    def __init__(self, name: str, clock: Clock, *outcomes: DapStatistics | Exception) -> None:
        self.name = name
        self.collector = "dap_statistics"
        self.requests_by_code: dict[str, int] = {}
        self.token_expires_at: float | None = None
        self.token_store_pending: bool | None = None
        self.certificate_expires_at: float | None = None
        self.retirable = False
        self._clock = clock
        self._outcomes = list(outcomes) or [DapStatistics(total_customers=1)]
        self.calls: list[float] = []

    def fetch(self) -> DapStatistics:
        self.calls.append(self._clock.mono)
        outcome = self._outcomes.pop(0) if len(self._outcomes) > 1 else self._outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def make(clock: Clock, *sources: FakeSource, concurrency: int = 16,
         spawn: Callable[[Callable[[], None]], None] = lambda fn: fn(),
         published: list[Snapshot] | None = None, publish_spacing: float = 0.0) -> Poller:
    return Poller(list(sources), interval=INTERVAL, concurrency=concurrency,
                  on_snapshot=(published if published is not None else []).append,
                  clock=lambda: clock.wall, monotonic=lambda: clock.mono, spawn=spawn,
                  rng=random.Random(7), retry_initial=15.0, publish_spacing=publish_spacing)


def run_until(poller: Poller, clock: Clock, seconds: float) -> None:
    """Drive the loop as run() would: step, then sleep until the next due time."""
    end = clock.mono + seconds
    while True:
        wait = poller.step()
        if clock.mono + wait > end:
            clock.mono, clock.wall = end, clock.wall + (end - clock.mono)
            poller.step()
            return
        clock.advance(max(wait, 0.001))


def test_every_tenant_is_polled_at_start_and_published_once() -> None:
    """The first step polls each tenant once and publishes one snapshot with all of them."""
    clock = Clock()
    a, b = FakeSource("a", clock), FakeSource("b", clock)
    published: list[Snapshot] = []
    poller = make(clock, a, b, published=published)
    poller.step()
    assert (a.calls, b.calls) == ([1000.0], [1000.0])
    assert len(published) == 1
    assert published[0].ready


def test_success_repolls_after_the_interval_with_a_little_jitter() -> None:
    """After a success the next poll comes after interval ±3%, not before."""
    clock = Clock()
    source = FakeSource("a", clock)
    poller = make(clock, source)
    run_until(poller, clock, INTERVAL * 0.97 - 1)
    assert len(source.calls) == 1
    run_until(poller, clock, INTERVAL * 0.06 + 2)
    assert len(source.calls) == 2
    assert INTERVAL * 0.97 <= source.calls[1] - source.calls[0] <= INTERVAL * 1.03


def test_retryable_failures_back_off_exponentially_within_the_interval() -> None:
    """Timeouts are retried with growing delays, and never later than the next regular poll."""
    clock = Clock()
    source = FakeSource("a", clock, PollError("timeout", "slow"))
    poller = make(clock, source)
    run_until(poller, clock, INTERVAL * 1.05)
    gaps = [b - a for a, b in zip(source.calls, source.calls[1:], strict=False)]
    assert 7.5 <= gaps[0] <= 15
    assert 15 <= gaps[1] <= 30
    assert 30 <= gaps[2] <= 60
    first_cycle = [t for t in source.calls if t - source.calls[0] < INTERVAL * 0.97]
    assert source.calls[len(first_cycle)] - source.calls[0] <= INTERVAL * 1.03
    assert 5 <= len(first_cycle) <= 8


def test_non_retryable_failure_waits_for_the_next_interval() -> None:
    """An auth failure is not retried early: the next attempt is the regular one."""
    clock = Clock()
    source = FakeSource("a", clock, PollError("auth", "run login"))
    poller = make(clock, source)
    run_until(poller, clock, INTERVAL * 0.96)
    assert len(source.calls) == 1


@pytest.mark.parametrize("retry_after", [600.0, 2000.0])
def test_retry_after_is_honoured_even_past_the_interval(retry_after: float) -> None:
    """After a 429 with Retry-After, no request is made before it expires."""
    clock = Clock()
    source = FakeSource("a", clock, PollError("throttled", "429", retry_after=retry_after),
                        DapStatistics(total_customers=1))
    poller = make(clock, source)
    run_until(poller, clock, retry_after - 1)
    assert len(source.calls) == 1
    run_until(poller, clock, INTERVAL + 2)
    assert len(source.calls) >= 2
    assert source.calls[1] - source.calls[0] >= retry_after


def test_failure_keeps_last_good_data_and_counts_the_reason() -> None:
    """A failed poll keeps the previous stats and success time, and counts one error."""
    clock = Clock()
    good = DapStatistics(total_customers=42)
    source = FakeSource("a", clock, good, PollError("server_error", "502"))
    poller = make(clock, source)
    poller.step()
    first_success = poller.snapshot().views[0].last_success_time
    run_until(poller, clock, INTERVAL * 1.04)
    view = poller.snapshot().views[0]
    assert view.data is good
    assert view.last_success_time == first_success
    assert view.last_poll_success is False
    assert view.last_error_reason == "server_error"
    # Every attempt after the first failed (server errors are retried), and each is counted.
    assert view.errors_total == {"server_error": len(source.calls) - 1}


def test_unchanged_data_stays_the_same_object_and_changed_data_replaces_it() -> None:
    """A poll whose data equals the last one's keeps the last object (the renderer reuses its lines
    by identity); a poll with different data publishes the new object."""
    clock = Clock()
    first, equal, changed = (DapStatistics(total_customers=7), DapStatistics(total_customers=7),
                             DapStatistics(total_customers=8))
    assert equal == first
    assert equal is not first
    source = FakeSource("a", clock, first, equal, changed)
    poller = make(clock, source)
    poller.step()
    run_until(poller, clock, INTERVAL * 1.2)
    assert len(source.calls) == 2
    assert poller.snapshot().views[0].data is first
    run_until(poller, clock, INTERVAL * 1.2)
    assert len(source.calls) == 3
    assert poller.snapshot().views[0].data is changed


def test_recovery_clears_the_error_state() -> None:
    """A success after failures sets poll_success again and clears the last error."""
    clock = Clock()
    source = FakeSource("a", clock, PollError("connection", "refused"), DapStatistics(total_customers=3))
    poller = make(clock, source)
    run_until(poller, clock, 20)
    view = poller.snapshot().views[0]
    assert view.last_poll_success is True
    assert view.last_error_reason is None
    assert view.errors_total == {"connection": 1}
    assert view.data is not None


def test_unexpected_exception_is_a_failed_poll_not_a_dead_loop() -> None:
    """A bug in fetch is reported as a failure and the tenant keeps being polled."""
    clock = Clock()
    source = FakeSource("a", clock, RuntimeError("boom"), DapStatistics(total_customers=1))
    poller = make(clock, source)
    poller.step()
    assert poller.snapshot().views[0].last_error_reason == "invalid_response"
    run_until(poller, clock, 20)
    assert poller.snapshot().views[0].last_poll_success is True


def test_concurrency_bound_limits_polls_in_flight() -> None:
    """With concurrency 2 and 5 due tenants, only 2 start until one finishes."""
    clock = Clock()
    sources = [FakeSource(f"t{i}", clock) for i in range(5)]
    pending: list[Callable[[], None]] = []
    started = [0]

    def spawn(fn: Callable[[], None]) -> None:
        started[0] += 1
        pending.append(fn)

    poller = make(clock, *sources, concurrency=2, spawn=spawn)
    poller.step()
    assert started[0] == 2
    poller.step()
    assert started[0] == 2
    pending.pop(0)()
    poller.step()
    assert started[0] == 3


def test_full_slots_make_the_loop_wait_instead_of_spinning() -> None:
    """With due tenants but no free slot, step() waits for a finishing poll rather than 0 s."""
    clock = Clock()
    poller = make(clock, *[FakeSource(f"t{i}", clock) for i in range(3)], concurrency=1,
                  spawn=lambda fn: None)
    assert poller.step() == INTERVAL


def test_poll_all_once_respects_concurrency_and_attempts_everyone() -> None:
    """--once polls every tenant exactly once with at most `concurrency` in flight."""
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    class Slow(FakeSource):
        def fetch(self) -> DapStatistics:
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.02)
            with lock:
                in_flight[0] -= 1
            return super().fetch()

    clock = Clock()
    sources = [Slow(f"t{i}", clock) for i in range(8)]
    poller = Poller(sources, interval=INTERVAL, concurrency=3, on_snapshot=lambda s: None)
    snapshot = poller.poll_all_once()
    assert all(t.attempted and t.last_poll_success for t in snapshot.views)
    assert [len(s.calls) for s in sources] == [1] * 8
    assert peak[0] == 3


def test_run_stops_promptly() -> None:
    """run() in a thread returns soon after stop(), even with the next poll far away."""
    ticks: list[int] = []
    poller = Poller([FakeSource("a", Clock())], interval=INTERVAL, concurrency=1,
                    on_snapshot=lambda s: None, on_tick=lambda: ticks.append(1))
    thread = threading.Thread(target=poller.run)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    poller.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1
    assert poller.snapshot().views[0].attempted


def test_loop_wakes_just_after_utc_midnight() -> None:
    """Near midnight the loop sleeps only until just past it, so the day-change re-render is on time."""
    clock = Clock()
    midnight = 1_795_478_400.0  # 2026-11-24T00:00:00Z
    clock.wall = midnight - 30
    poller = make(clock, FakeSource("a", clock))
    assert 30 < poller._seconds_to_utc_midnight() <= 32
    clock.wall = midnight + 1
    assert poller._seconds_to_utc_midnight() > 86000


def test_reconfigure_keeps_known_sources_and_polls_new_ones_at_once() -> None:
    """After reconfigure, a kept source keeps its data and schedule; a new one polls at once."""
    clock = Clock()
    kept, dropped, added = (FakeSource(n, clock, DapStatistics(total_customers=i))
                            for i, n in enumerate(("kept", "dropped", "added"), start=1))
    published: list[Snapshot] = []
    poller = make(clock, kept, dropped, published=published)
    poller.step()
    clock.advance(60)
    poller.reconfigure([kept, added], interval=INTERVAL, concurrency=16)
    poller.step()
    assert (kept.calls, added.calls, len(dropped.calls)) == ([1000.0], [1060.0], 1)
    assert [(t.name, t.data.total_customers if isinstance(t.data, DapStatistics) else None)
            for t in published[-1].views] == [("kept", 1), ("added", 3)]


def test_polls_ending_close_together_are_published_together() -> None:
    """With a publish spacing, a poll that ends while others still run waits for the spacing;
    the last poll of the round publishes at once, and step() wakes in time for a held one."""
    clock = Clock()
    pending: list[Callable[[], None]] = []
    published: list[Snapshot] = []
    poller = make(clock, *[FakeSource(f"t{i}", clock) for i in range(3)], spawn=pending.append,
                  published=published, publish_spacing=1.0)
    poller.step()
    pending.pop(0)()
    poller.step()
    assert len(published) == 1  # the first to finish: nothing was published for a while
    clock.advance(0.2)
    pending.pop(0)()
    assert poller.step() == pytest.approx(0.8)  # held back, and the loop knows when to come back
    assert len(published) == 1
    pending.pop(0)()  # the last one: nothing is running any more
    poller.step()
    assert len(published) == 2
    assert all(t.attempted for t in published[-1].views)
