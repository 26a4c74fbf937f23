"""Soak: thousands of polls with injected faults and tens of thousands of scrapes; RSS and fds.

    python -m bench.soak [--polls 2000] [--scrapes 50000]

The exporter runs in a child process (bench.child: the same App that `serve` runs, polling 10
tenants every 0.2 s instead of the config's 1m minimum). This process runs the simulator, injects a fault
every few polls and scrapes /metrics on keep-alive connections. The child's RSS and open file
descriptors are read from /proc after start, after a warm-up (a tenth of the load), and at the
end. Targets: RSS growth after warm-up under 5 MiB; no growth in file descriptors.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.report import Report, Row
from bench.tools import TenantSpec, exporter, rss_mib, write_config
from exporter.simulator import Fault, Simulator

TENANTS = 10
INTERVAL = 0.2
REQUEST_TIMEOUT = 0.5
SCRAPERS = 4
RSS_GROWTH_TARGET_MIB = 5.0
FAULTS = [
    Fault("api", status=500), Fault("api", status=503, headers={"Retry-After": "0"}),
    Fault("api", status=429, headers={"Retry-After": "0"}),
    Fault("api", status=200, body="<html>proxy</html>", headers={"Content-Type": "text/html"}),
    Fault("api", status=200, body='{"totalDapCustomerCount": 3, "establishedDapCount": [{"da'),
    Fault("api", status=200, body={"totalDapCustomerCount": 1, "pad": "x" * 3000}, reset=True),
    Fault("api", status=None, delay=REQUEST_TIMEOUT + 0.1),
    Fault("api", status=404), Fault("api", status=401),
    Fault("token", status=503, headers={"Retry-After": "0"}),
]


@dataclasses.dataclass
class Sample:
    label: str
    polls: int
    scrapes: int
    rss_mib: float
    fds: int


def measure(pid: int, label: str, polls: int, scrapes: int) -> Sample:
    rss = rss_mib(pid)
    # The fewest over a second: polls in flight briefly hold sockets, lock and temp files.
    fds = []
    for _ in range(20):
        fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        time.sleep(0.05)
    return Sample(label, polls, scrapes, rss, min(fds))


class Scrapers:
    """Keep-alive scrapers in threads, counting successful scrapes until told to stop."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self._address = (host, int(port))
        self.count = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(SCRAPERS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        conn = http.client.HTTPConnection(*self._address, timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(*self._address, timeout=5)
                ok = False
            with self._lock:
                if ok:
                    self.count += 1
                else:
                    self.failures += 1
        conn.close()


def soak(polls: int, scrapes: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="pcx-soak-") as tmp, \
            Simulator(cert_dir=Path(tmp) / "certs", token_lifetime=60) as sim:
        config = write_config(sim, Path(tmp), [TenantSpec(customers=200)] * TENANTS, request_timeout="1s")
        with exporter(config, interval=INTERVAL) as child:
            url, pid = child.url, child.pid
            while sim.count("api") < TENANTS:
                time.sleep(0.05)
            samples = [measure(pid, "after start", sim.count("api"), 0)]
            scrapers = Scrapers(url)
            scrapers.start()
            warmed = False
            next_fault = sim.count("api") + rng.randint(3, 12)
            while sim.count("api") < polls or scrapers.count < scrapes:
                done = sim.count("api")
                if done >= next_fault and done < polls:
                    sim.inject(dataclasses.replace(rng.choice(FAULTS)))
                    next_fault = done + rng.randint(3, 12)
                if not warmed and done >= polls // 10 and scrapers.count >= scrapes // 10:
                    samples.append(measure(pid, "after warm-up", done, scrapers.count))
                    warmed = True
                time.sleep(0.01)
            scrapers.stop()
            samples.append(measure(pid, "end", sim.count("api"), scrapers.count))
            faults = sum(1 for r in sim.requests if r.detail == "fault")
            print(f"{faults} faults injected; {scrapers.failures} failed scrapes")
    return samples


SECTION = "Soak: polls with injected faults and keep-alive gzip scrapes (RSS, open files)"


def report(samples: list[Sample], started: float, table: Report | None = None) -> bool:
    print(f"{'':<14} {'polls':>6} {'scrapes':>8} {'RSS MiB':>8} {'fds':>4}")
    for s in samples:
        print(f"{s.label:<14} {s.polls:>6} {s.scrapes:>8} {s.rss_mib:>8.1f} {s.fds:>4}")
    warm, end = samples[-2], samples[-1]
    growth = end.rss_mib - warm.rss_mib
    rss_ok = growth < RSS_GROWTH_TARGET_MIB
    fds_ok = end.fds <= warm.fds
    print(f"RSS growth after warm-up: {growth:+.1f} MiB (target < {RSS_GROWTH_TARGET_MIB:.0f} MiB) "
          f"{'PASS' if rss_ok else 'MISS'}")
    print(f"open fds after warm-up: {warm.fds} -> {end.fds} (target: no growth) "
          f"{'PASS' if fds_ok else 'MISS'}")
    print(f"wall time {time.monotonic() - started:.0f}s")
    if table is not None:
        start = samples[0]
        table.add(Row(SECTION, f"{end.polls:,} polls, {end.scrapes:,} scrapes: RSS growth after warm-up",
                      f"{growth:+.1f} MiB", f"{warm.rss_mib:.1f} MiB after warm-up "
                      f"({start.rss_mib:.1f} after start)", "",
                      f"< {RSS_GROWTH_TARGET_MIB:.0f} MiB", rss_ok))
        table.add(Row(SECTION, "open file descriptors", f"{end.fds} at the end",
                      f"{warm.fds} after warm-up", "", "no growth", fds_ok))
    return rss_ok and fds_ok


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"soak: {args.polls} polls of {TENANTS} tenants with injected faults, {args.scrapes} "
          f"scrapes on {SCRAPERS} keep-alive connections (seed {seed})")
    started = time.monotonic()
    report(soak(args.polls, args.scrapes, seed), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
