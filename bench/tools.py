"""What every benchmark needs: the simulator's tenants, the exporter and its peers as processes,
nginx serving saved bytes, wrk, and RSS read from /proc."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml

from exporter.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "11111111-1111-1111-1111-111111111111"


@dataclasses.dataclass(frozen=True)
class TenantSpec:
    dates: int | None = None  # distinct dates in each list; None: the simulator's realistic mix
    customers: int | None = None
    collectors: tuple[str, ...] | None = None  # None: the default (dap_statistics)


T = TypeVar("T")


def timed(work: Callable[[], T]) -> tuple[T, float]:
    """work()'s result and the seconds it took (monotonic clock)."""
    started = time.monotonic()
    result = work()
    return result, time.monotonic() - started


def write_config(sim: Simulator, directory: Path, tenants: Sequence[TenantSpec], *,
                 request_timeout: str = "5s", concurrency: int | None = None) -> Path:
    """Add the tenants to the simulator and write a config that polls them all."""
    directory.mkdir(parents=True, exist_ok=True)
    sim.add_client(CLIENT_ID)
    entries: list[dict[str, Any]] = []
    for i, spec in enumerate(tenants):
        tenant_id = f"00000000-0000-0000-{os.getpid() % 10000:04d}-{len(sim.tenants):012d}"
        sim.add_tenant(tenant_id, customers=spec.customers, dates=spec.dates)
        seed = directory / f"t{i}.seed"
        seed.write_text(sim.issue_refresh_token(tenant_id, CLIENT_ID, f"admin@t{i}.test"))
        entries.append({"name": f"t{i:03d}", "tenant_id": tenant_id, "client_id": CLIENT_ID,
                        "auth": {"token_cache_file": str(directory / f"t{i}.cache.json"),
                                 "refresh_token_file": str(seed)}})
        if spec.collectors is not None:
            entries[-1]["collectors"] = list(spec.collectors)
    document: dict[str, Any] = {
        "request_timeout": request_timeout, "endpoints": sim.endpoints_config(), "tenants": entries}
    if concurrency is not None:
        document["poll_concurrency"] = concurrency
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class _Process:
    """A process the benchmark measures and then stops: asked to end, killed after 15 s."""

    proc: subprocess.Popen[str]
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _ask_to_stop(self) -> None:
        self.proc.terminate()

    def stop(self) -> None:
        self._ask_to_stop()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Child(_Process):
    """A benchmark child process (`python -m bench.child ...`) that prints its URL, then serves
    until its stdin closes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError(f"{' '.join(args)} did not start (exit {self.proc.returncode})")

    def _ask_to_stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()


def exporter(config: Path, *, interval: float) -> Child:
    """The exporter pipeline (App, as `serve` runs it) polling every `interval` seconds."""
    return Child("bench.child", "exporter", str(config), str(interval))


class Served(_Process):
    """`partnercenter-exporter --config.file CONFIG` as a user runs it (the real entry point and
    import set), on a free loopback port; stopped with SIGTERM."""

    def __init__(self, config: Path) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.proc = subprocess.Popen([sys.executable, "-m", "exporter", "--config.file", str(config),
                                      "--web.listen-address", self.url.removeprefix("http://")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                                     cwd=ROOT)
        try:
            wait_ready(self.url, 60, proc=self.proc)
        except RuntimeError:
            self.stop()
            raise


def wakeups(pid: int) -> int:
    """Context switches of every thread of `pid` so far: each is a wake-up, or a preemption."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
    return total


def get(url: str, path: str, *, gzipped: bool = False) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"} if gzipped else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(url: str, timeout: float = 120.0, *, proc: subprocess.Popen[str] | None = None) -> None:
    """Until /readyz answers 200; a refused connection is a server not listening yet. With `proc`,
    its exit ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(url, "/readyz")[0] == 200:
                return
        except ConnectionRefusedError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} was not ready within {timeout:.0f}s")
        time.sleep(0.05)


def series_count(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


class Nginx:
    """nginx serving saved exposition bytes as static files: /metrics and /metrics.gz."""

    def __init__(self, directory: Path, *, workers: int | None = None) -> None:
        """`workers`: nginx's worker processes (default: one per CPU)."""
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        scratch = directory / "scratch"
        scratch.mkdir(exist_ok=True)
        self.port = _free_port()
        conf = directory / "nginx.conf"
        # As root, nginx would run its workers as nobody, who cannot read a private temp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(f"""{user}
worker_processes {workers or "auto"};
pid {directory}/nginx.pid;
error_log {directory}/error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on; tcp_nodelay on;
  keepalive_requests 100000000; keepalive_timeout 120s;
  client_body_temp_path {scratch}; proxy_temp_path {scratch};
  fastcgi_temp_path {scratch}; uwsgi_temp_path {scratch}; scgi_temp_path {scratch};
  server {{
    listen 127.0.0.1:{self.port};
    root {directory};
    location = /metrics {{ default_type "text/plain; version=0.0.4; charset=utf-8";
                          try_files /metrics.txt =404; }}
    location = /metrics.gz {{ default_type "text/plain; version=0.0.4; charset=utf-8";
                             add_header Content-Encoding gzip; add_header Vary Accept-Encoding;
                             try_files /metrics.txt.gz =404; }}
  }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-e", str(directory / "error.log"), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                if get(self.url, "/metrics")[0] in (200, 404):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = directory / "error.log"
                    raise RuntimeError(f"nginx did not start; see {log}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, body: bytes, gzip_body: bytes) -> None:
        """Serve these bytes; checks that nginx answers with them exactly."""
        for name, data in (("metrics.txt", body), ("metrics.txt.gz", gzip_body)):
            (self.dir / name).write_bytes(data)
        assert get(self.url, "/metrics") == (200, body)
        status, served = get(self.url, "/metrics.gz")
        assert (status, served) == (200, gzip_body)
        assert gzip.decompress(served) == body

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    if not match:
        raise RuntimeError(f"wrk printed no {percentile}% latency:\n{output}")
    return float(match.group(1)) * _UNITS[match.group(2)]


# A wrk script that sends a request head never sent before on every request (a counter header), so
# a server cannot answer from a cache of parsed heads: the cost of parsing itself.
NEW_HEAD_EACH_REQUEST = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", nil, {["X-Request-Number"] = tostring(counter)})
end
"""


def wrk(url: str, *, connections: int, seconds: int, gzipped: bool = False,
        script: Path | None = None) -> WrkResult:
    """One wrk run with keep-alive (one thread, so the other core stays with the server)."""
    command = [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{max(1, seconds)}s",
               "--latency", "--timeout", "10s"]
    if gzipped:
        command += ["-H", "Accept-Encoding: gzip"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60,
                            check=True).stdout
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not rps or not total:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return WrkResult(float(rps.group(1)), _latency(output, "50"), _latency(output, "99"),
                     int(total.group(1)), errors + (int(non_2xx.group(1)) if non_2xx else 0))


def median_result(results: Sequence[WrkResult]) -> WrkResult:
    """Medians of several runs: this machine's neighbours make single runs noisy."""
    return WrkResult(statistics.median(r.requests_per_second for r in results),
                     statistics.median(r.p50_ms for r in results),
                     statistics.median(r.p99_ms for r in results),
                     sum(r.requests for r in results), sum(r.errors for r in results))


class Steal:
    """CPU time the hypervisor gave to other guests while a measurement ran (from /proc/stat)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        steal = fields[7] if len(fields) > 7 else 0
        return steal, sum(fields)

    def percent(self) -> float:
        steal, total = self._read()
        elapsed = total - self._start[1]
        return 100.0 * (steal - self._start[0]) / elapsed if elapsed else 0.0
