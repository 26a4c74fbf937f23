"""One background loop: polls each source (a tenant's collector) on its interval, backs off on
failure, swaps snapshots."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from exporter.collectors import REGISTRY
from exporter.model import RETRYABLE_REASONS, PollError, Snapshot, SourceData, SourceView

log = logging.getLogger("exporter.poller")

# How far the regular interval is spread so tenants and replicas do not poll in lockstep.
INTERVAL_JITTER = 0.03
# The loop wakes at least this often, so a watchdog can tell a live loop from a dead or stuck one.
HEARTBEAT = 30.0
# After an unexpected error in the loop itself, wait this long rather than spin on it.
_LOOP_ERROR_PAUSE = 1.0


class Source(Protocol):
    """One collector of one tenant: fetch() raises PollError; the counters feed the metrics."""

    @property
    def name(self) -> str: ...

    @property
    def collector(self) -> str: ...

    @property
    def requests_by_code(self) -> Mapping[str, int]: ...

    @property
    def token_expires_at(self) -> float | None: ...

    @property
    def token_store_pending(self) -> bool | None: ...

    @property
    def certificate_expires_at(self) -> float | None: ...

    @property
    def retirable(self) -> bool:
        """Its API is one Microsoft retires: a 404 or 410 means retired, not an outage."""
        ...

    def fetch(self) -> SourceData: ...


@dataclasses.dataclass
class _SourceState:
    source: Source
    view: SourceView
    next_due: float
    regular_next: float
    failures: int = 0


def _first_view(source: Source) -> SourceView:
    return SourceView(name=source.name, collector=source.collector)


def _unchanged(data: SourceData | None, previous: SourceData | None) -> SourceData | None:
    """`previous` when `data` equals it, else `data`. Unchanged data (the usual case: statistics
    move daily) stays the same object, so a publish re-renders and re-compresses only the source's
    health lines (exporter.exposition.Renderer)."""
    return previous if data is not None and previous is not None and data == previous else data


def _spawn_daemon(target: Callable[[], None]) -> None:
    # Daemon threads: a poll stuck on a slow upstream must not hold up shutdown.
    threading.Thread(target=target, name="poll", daemon=True).start()


class Poller:
    def __init__(self, sources: Sequence[Source], *, interval: float, concurrency: int,
                 on_snapshot: Callable[[Snapshot], None],
                 on_tick: Callable[[], object] | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 spawn: Callable[[Callable[[], None]], None] = _spawn_daemon,
                 rng: random.Random | None = None, retry_initial: float = 15.0,
                 publish_spacing: float = 0.0) -> None:
        self._interval = interval
        # While other polls are still running, publish at most this often: each publish renders
        # and gzips the whole exposition, and a round of hundreds of tenants need not do that
        # hundreds of times. The last poll of a round always publishes at once.
        self._publish_spacing = publish_spacing
        self._last_publish = float("-inf")
        self._concurrency = concurrency
        self._on_snapshot = on_snapshot
        self._on_tick = on_tick
        self._clock = clock
        self._monotonic = monotonic
        self._spawn = spawn
        self._rng = rng or random.Random()
        self._retry_initial = retry_initial
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._dirty = False
        # Unexpected errors outside a fetch (render, publish, bookkeeping), by stage: a bug, counted
        # and logged, never the end of the loop.
        self._internal_errors: dict[str, int] = {}
        self._traced: set[str] = set()
        now = monotonic()
        self._heartbeat = now
        # id() of each source whose poll runs, also of sources a reconfigure has dropped since.
        self._fetching: set[int] = set()
        self._states = [_SourceState(source=s, view=_first_view(s), next_due=now,
                                     regular_next=now) for s in sources]

    def reconfigure(self, sources: Sequence[Source], *, interval: float, concurrency: int) -> None:
        """Poll these sources from now on; a source polled before keeps its state and schedule.

        A source rebuilt for the same tenant and collector (new credentials, timeout or endpoints)
        takes over the old one's data and schedule: a reload never polls earlier than planned,
        which would get around the interval and Partner Center's throttling. Only one that never
        succeeded is polled at once.
        """
        now = self._monotonic()
        with self._lock:
            known = {id(state.source): state for state in self._states}
            by_key = {(state.source.name, state.source.collector): state for state in self._states}
            states = []
            for source in sources:
                state = known.get(id(source))
                old = by_key.get((source.name, source.collector))
                if state is None and old is not None:
                    succeeded = old.view.last_success_time is not None
                    # A poll still running on the old source is this cycle's: wait for the next.
                    running = id(old.source) in self._fetching
                    due = (old.regular_next if running else old.next_due) if succeeded else now
                    state = _SourceState(source=source, view=old.view, next_due=due,
                                         regular_next=old.regular_next, failures=old.failures)
                states.append(state or _SourceState(source=source, view=_first_view(source),
                                                    next_due=now, regular_next=now))
            self._states = states
            self._interval = interval
            self._concurrency = concurrency
            self._dirty = True
        self._wake.set()

    def busy(self, source: Source) -> bool:
        """True while a poll of this source runs, even one dropped by reconfigure."""
        with self._lock:
            return id(source) in self._fetching

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(tuple(state.view for state in self._states),
                            internal_errors=dict(self._internal_errors))

    def heartbeat_age(self) -> float:
        """Seconds since the loop last woke; it wakes at least every HEARTBEAT seconds."""
        return self._monotonic() - self._heartbeat

    def step(self) -> float:
        """Start the polls that are due, publish what changed; return seconds until next due."""
        now = self._monotonic()
        with self._lock:
            # Polls of dropped sources count too: the concurrency bound holds across a reload.
            due = sorted((s for s in self._states if id(s.source) not in self._fetching
                          and s.next_due <= now), key=lambda s: s.next_due)
            starting = due[:max(0, self._concurrency - len(self._fetching))]
            for state in starting:
                self._fetching.add(id(state.source))
        for state in starting:
            self._spawn(lambda state=state: self._poll(state))  # type: ignore[misc]
        publish_wait = self._publish_if_dirty()
        now = self._monotonic()
        with self._lock:
            running = len(self._fetching)
            soonest = min((s.next_due for s in self._states if id(s.source) not in self._fetching),
                          default=None)
        if soonest is None or (soonest <= now and running >= self._concurrency):
            # Nothing can start before a running poll finishes, and finishing wakes the loop.
            return min(self._interval, publish_wait)
        return min(max(0.0, soonest - now), publish_wait)

    def run(self) -> None:
        """Poll until stop(); each tenant starts at once, then every interval. Nothing ends it early:
        an unexpected error is counted and logged, and the loop goes on with the last good data."""
        while not self._stopped.is_set():
            self._heartbeat = self._monotonic()
            try:
                timeout = min(self.step(), self._seconds_to_utc_midnight(), HEARTBEAT)
            except Exception:
                self.internal_error("loop")
                timeout = _LOOP_ERROR_PAUSE
            self._wake.wait(timeout)
            self._wake.clear()
            if self._on_tick is not None:
                try:
                    self._on_tick()
                except Exception:
                    self.internal_error("tick")

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def poll_all_once(self) -> Snapshot:
        """Poll every tenant once (bounded concurrency, no retries) and return the snapshot."""
        slots = threading.BoundedSemaphore(self._concurrency)
        threads = []

        def poll(state: _SourceState) -> None:
            with slots:
                self._poll(state)

        for state in self._states:
            self._fetching.add(id(state.source))
            thread = threading.Thread(target=poll, args=(state,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        self._publish_if_dirty()
        return self.snapshot()

    def _publish_if_dirty(self) -> float:
        """Publish what changed, unless that is too soon; return seconds until it may publish."""
        now = self._monotonic()
        with self._lock:
            if not self._dirty:
                return float("inf")
            wait = self._last_publish + self._publish_spacing - now
            if wait > 0 and self._fetching:
                return wait
            self._dirty = False
            self._last_publish = now
        try:
            self._on_snapshot(self.snapshot())
        except Exception:
            # The last good exposition stays in place; the next poll publishes again.
            self.internal_error("publish")
        return float("inf")

    def internal_error(self, stage: str) -> None:
        """Count an unexpected error (call from an except block); the first of a stage is traced."""
        with self._lock:
            self._internal_errors[stage] = self._internal_errors.get(stage, 0) + 1
            first = stage not in self._traced
            self._traced.add(stage)
            self._dirty = True
        log.error("unexpected error in the poll loop; it goes on with the last good data; this is a "
                  "bug, please report it", exc_info=first, extra={"stage": stage})

    def _seconds_to_utc_midnight(self) -> float:
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
        return max(1.0, (midnight - now).total_seconds() + 1.0)

    def _poll(self, state: _SourceState) -> None:
        source = state.source
        started = self._monotonic()
        with self._lock:
            if started >= state.regular_next:
                # A new cycle: the retries of the previous one are over.
                state.regular_next = started + self._interval * self._rng.uniform(
                    1 - INTERVAL_JITTER, 1 + INTERVAL_JITTER)
                state.failures = 0
        data: SourceData | None = None
        error: PollError | None = None
        try:
            data = source.fetch()
        except PollError as err:
            error = err
        except Exception as err:  # a bug must not kill the loop; report it like any failure
            log.exception("unexpected error while polling",
                          extra={"tenant": source.name, "collector": source.collector})
            error = PollError("invalid_response", f"unexpected {type(err).__name__} while polling; "
                                                  f"this is a bug, please report it")
        finished = self._monotonic()
        data = _unchanged(data, state.view.data)
        try:
            with self._lock:
                first = not state.view.attempted
                was_failing = state.view.attempted and not state.view.last_poll_success
                was_retired = bool(state.view.api_retired)
                # Whatever goes wrong below, the source is polled again at its regular time.
                state.next_due, self._dirty = max(state.regular_next, finished), True
                self._fetching.discard(id(source))
                state.view = self._next_view(state, data, error, finished - started)
                state.next_due = self._schedule(state, error, finished)
            self._log_outcome(source, error, first or was_failing, finished - started, data,
                              retired=(was_retired, bool(state.view.api_retired)))
        except Exception:
            self.internal_error("poll")
        finally:
            self._wake.set()

    def _next_view(self, state: _SourceState, data: SourceData | None,
                   error: PollError | None, duration: float) -> SourceView:
        source = state.source
        retired = state.view.api_retired
        if source.retirable and (error is None or error.reason == "not_found"):
            # Any other failure says nothing about it: the last answer stands.
            retired = error is not None
        view = dataclasses.replace(state.view, attempted=True, last_duration=duration,
                                   api_requests_total=dict(source.requests_by_code),
                                   token_expires_at=source.token_expires_at,
                                   token_store_pending=source.token_store_pending, api_retired=retired,
                                   certificate_expires_at=source.certificate_expires_at)
        if error is None:
            assert data is not None
            return dataclasses.replace(
                view, data=data, last_poll_success=True, last_success_time=self._clock(),
                last_error_reason=None, last_error_message=None,
                skipped_entries_total=view.skipped_entries_total + data.skipped_entries)
        errors = dict(view.errors_total)
        errors[error.reason] = errors.get(error.reason, 0) + 1
        return dataclasses.replace(view, last_poll_success=False, last_error_reason=error.reason,
                                   last_error_message=error.message, errors_total=errors)

    def _schedule(self, state: _SourceState, error: PollError | None, now: float) -> float:
        if error is None or error.reason not in RETRYABLE_REASONS:
            next_due = state.regular_next
        else:
            state.failures += 1
            backoff = min(self._retry_initial * 2 ** (state.failures - 1), self._interval)
            next_due = min(now + backoff * self._rng.uniform(0.5, 1.0), state.regular_next)
        if error is not None and error.retry_after is not None:
            # Never ask again before upstream said we may, even past the regular interval.
            next_due = max(next_due, now + error.retry_after)
        return max(next_due, now)

    @staticmethod
    def _log_outcome(source: Source, error: PollError | None, notable: bool, duration: float,
                     data: SourceData | None, *, retired: tuple[bool, bool] = (False, False)) -> None:
        """One line per poll; a retired API is told once, when it is found, and once when it is back."""
        where = {"tenant": source.name, "collector": source.collector}
        was_retired, is_retired = retired
        if is_retired and not was_retired:
            log.warning("the API answers as retired; the last good data stays; drop the collector from "
                        "the tenant's collectors, or fix its endpoint URL if that was changed",
                        extra={**where, "error": error.message if error else ""})
        elif was_retired and not is_retired:
            log.info("the API that answered as retired answers again", extra=where)
        if error is not None:
            log.log(logging.DEBUG if is_retired else logging.WARNING, "poll failed", extra={
                **where, "reason": error.reason, "error": error.message, "duration": f"{duration:.3f}s"})
        elif data is not None:
            log.log(logging.INFO if notable else logging.DEBUG, "poll succeeded", extra={
                **where, **REGISTRY.summary(source.collector, data), "duration": f"{duration:.3f}s"})
