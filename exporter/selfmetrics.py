"""The process's own metrics: process_* (memory, CPU, file descriptors, start time), python_gc_*
and python_info, the series every Python exporter has from prometheus_client's ProcessCollector,
GCCollector and PlatformCollector, with the same names, help, values and order.

They are read here rather than through those collectors because `import prometheus_client` loads
its HTTP servers, WSGI and ASGI support with it: 1.5 MiB of RSS in a process whose target is 38
(bench, memory section). tests/test_selfmetrics.py compares this text with what prometheus_client's
collectors render from the same /proc.

They change every moment, so unlike the rest of /metrics they cannot be rendered at poll time.
They are read at most once a second, on a scrape, and the text and its gzip tail are kept for that
second: a burst of scrapes costs one read of /proc, the rest is copying bytes.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.exposition import Exposition, gzip_end
from exporter.families import Family, Row

REFRESH_INTERVAL = 1.0

VIRTUAL_MEMORY = Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
RESIDENT_MEMORY = Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
START_TIME = Family("process_start_time_seconds", "gauge",
                    "Start time of the process since unix epoch in seconds.")
CPU = Family("process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.")
OPEN_FDS = Family("process_open_fds", "gauge", "Number of open file descriptors.")
MAX_FDS = Family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
PYTHON_INFO = Family("python_info", "gauge", "Python platform information",
                     ["version", "implementation", "major", "minor", "patchlevel"])
GC_COLLECTED = Family("python_gc_objects_collected", "counter", "Objects collected during gc",
                      ["generation"])
GC_UNCOLLECTABLE = Family("python_gc_objects_uncollectable", "counter",
                          "Uncollectable objects found during GC", ["generation"])
GC_COLLECTIONS = Family("python_gc_collections", "counter", "Number of times this generation was collected",
                        ["generation"])


def _boot_time(proc: Path) -> float:
    """The kernel's boot time (btime of /proc/stat), 0.0 when it cannot be read."""
    try:
        with open(proc / "stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


class ProcessMetrics:
    """The self-metrics text, refreshed at most every REFRESH_INTERVAL; one instance per server."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic,
                 interval: float = REFRESH_INTERVAL, proc: Path = Path("/proc")) -> None:
        self._monotonic = monotonic
        self._interval = interval
        self._proc = proc
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._boot = _boot_time(proc)
        major, minor, patchlevel = platform.python_version_tuple()
        self._info: list[Row] = [
            ((platform.python_version(), platform.python_implementation(), major, minor, patchlevel), 1)]
        self._read_at = float("-inf")
        self._text = b""
        # The gzip end last made, and for which exposition and text: (exposition, text, end).
        self._gzip: tuple[Any, bytes, bytes] = (None, b"", b"")

    def text(self) -> bytes:
        """The self-metrics in the text format, at most a second old."""
        now = self._monotonic()
        if now - self._read_at >= self._interval:
            self._text = self._read()
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

    def _read(self) -> bytes:
        # As prometheus_client: without a boot time, no process_* at all.
        process = self._process() if self._boot else []
        families = [*process, (PYTHON_INFO, self._info), *self._gc()]
        return b"".join(family.header + family.text(rows).encode() for family, rows in families)

    def _process(self) -> list[tuple[Family, list[Row]]]:
        """/proc/self's figures; a file that cannot be read leaves its families out."""
        families: list[tuple[Family, list[Row]]] = []
        own = self._proc / "self"
        try:
            parts = (own / "stat").read_bytes().split(b")")[-1].split()
            families += [(VIRTUAL_MEMORY, [((), float(parts[20]))]),
                         (RESIDENT_MEMORY, [((), float(parts[21]) * self._page_size)]),
                         (START_TIME, [((), float(parts[19]) / self._ticks + self._boot)]),
                         (CPU, [((), float(parts[11]) / self._ticks + float(parts[12]) / self._ticks)])]
        except OSError:
            pass
        try:
            limit = next(line for line in (own / "limits").read_bytes().splitlines()
                         if line.startswith(b"Max open file"))
            families += [(OPEN_FDS, [((), float(len(os.listdir(own / "fd"))))]),
                         (MAX_FDS, [((), float(limit.split()[3]))])]
        except (OSError, StopIteration):
            pass
        return families

    @staticmethod
    def _gc() -> list[tuple[Family, list[Row]]]:
        stats = gc.get_stats()
        return [(family, [((str(generation),), stat[key]) for generation, stat in enumerate(stats)])
                for family, key in ((GC_COLLECTED, "collected"), (GC_UNCOLLECTABLE, "uncollectable"),
                                    (GC_COLLECTIONS, "collections"))]
