"""The process's own metrics: process_* (memory, CPU, file descriptors, start time), python_gc_*
and python_info, from prometheus_client's collectors as every Python exporter has them.

They change every moment, so unlike the rest of /metrics they cannot be rendered at poll time.
They are read at most once a second, on a scrape, and the text and its gzip tail are kept for that
second: a burst of scrapes costs one read of /proc, the rest is copying bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest

from exporter.exposition import Exposition, gzip_end

REFRESH_INTERVAL = 1.0


class ProcessMetrics:
    """The self-metrics text, refreshed at most every REFRESH_INTERVAL; one instance per server."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic,
                 interval: float = REFRESH_INTERVAL) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        GCCollector(registry=self._registry)
        self._monotonic = monotonic
        self._interval = interval
        self._read_at = float("-inf")
        self._text = b""
        # The gzip end last made, and for which exposition and text: (exposition, text, end).
        self._gzip: tuple[Any, bytes, bytes] = (None, b"", b"")

    def text(self) -> bytes:
        """The self-metrics in the text format, at most a second old."""
        now = self._monotonic()
        if now - self._read_at >= self._interval:
            self._text = bytes(generate_latest(self._registry))
            self._read_at = now
        return self._text

    def gzip_end(self, exposition: Exposition) -> bytes:
        """What follows exposition.gzip_head so that the one gzip stream also holds text()."""
        text = self.text()
        seen, seen_text, end = self._gzip
        if seen is not exposition or seen_text is not text:
            end = gzip_end(exposition.compressor, text)
            self._gzip = (exposition, text, end)
        return end
