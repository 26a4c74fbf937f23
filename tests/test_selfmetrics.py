"""process_*, python_gc_* and python_info: the same text prometheus_client's collectors give."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest

from exporter.selfmetrics import ProcessMetrics

# /proc/self/stat as the kernel writes it (utime 1200 and stime 600 ticks, starttime 98765); the
# command name holds a ") " to show that fields are counted from the last parenthesis.
STAT = (b"4242 (python3) x) S 1 4242 4242 0 -1 4194304 9000 0 12 0 1200 600 0 0 20 0 9 0 "
        b"98765 123456789 4321 18446744073709551615 1 1 0 0 0 0 0 16781312 134234626 0 0 0 17 1 0 0 0 0 0\n")
LIMITS = (b"Limit                     Soft Limit           Hard Limit           Units     \n"
          b"Max cpu time              unlimited            unlimited            seconds   \n"
          b"Max open files            20000                524288               files     \n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A /proc with a boot time and a process of three open file descriptors."""
    (tmp_path / "stat").write_bytes(b"cpu  1 2 3\nbtime 1796000000\nprocesses 99\n")
    own = tmp_path / "self"
    (own / "fd").mkdir(parents=True)
    (own / "stat").write_bytes(STAT)
    (own / "limits").write_bytes(LIMITS)
    for fd in ("0", "1", "2"):
        (own / "fd" / fd).touch()
    return tmp_path


@pytest.fixture
def no_collection() -> Iterator[None]:
    """No garbage collection between the two reads, so both see the same python_gc_* counts."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _prometheus_client(proc: Path) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(proc=str(proc), registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return bytes(generate_latest(registry))


def test_the_text_is_prometheus_clients_for_the_same_proc(proc: Path, no_collection: None) -> None:
    """From one /proc, the text is byte for byte what prometheus_client's three collectors render."""
    ours = ProcessMetrics(proc=proc).text()
    assert b"process_open_fds 3.0\n" in ours
    assert ours == _prometheus_client(proc)


def test_without_a_boot_time_process_metrics_are_left_out(proc: Path, no_collection: None) -> None:
    """A /proc/stat without btime leaves out every process_* family, as prometheus_client does."""
    (proc / "stat").write_bytes(b"cpu  1 2 3\n")
    ours = ProcessMetrics(proc=proc).text()
    assert b"process_" not in ours
    assert ours == _prometheus_client(proc)


def test_an_unreadable_limits_file_leaves_out_the_descriptor_figures(proc: Path, no_collection: None) -> None:
    """Without /proc/self/limits, process_open_fds and process_max_fds are left out, the rest stays."""
    (proc / "self" / "limits").unlink()
    ours = ProcessMetrics(proc=proc).text()
    assert b"_fds" not in ours
    assert b"process_cpu_seconds_total 18.0\n" in ours
    assert ours == _prometheus_client(proc)


def test_this_process_has_the_same_families_in_the_same_order() -> None:
    """On the real /proc, the families and their order are prometheus_client's."""
    def families(text: bytes) -> list[str]:
        return re.findall(r"^# TYPE (\S+)", text.decode(), re.MULTILINE)

    assert families(ProcessMetrics().text()) == families(_prometheus_client(Path("/proc")))
