"""Run `partnercenter-exporter` as `serve` runs, and write the modules it imported once it has
polled and served a scrape: `python -m tests.helpers.imports OUT PORT ARGS...`.

Only what the exporter needs is imported here (sys, os, signal, socket, threading, time), so the
modules written are the exporter's own import set, not this wrapper's.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time


def _status(port: int, path: str, *, gzipped: bool = False) -> int:
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "Accept-Encoding: gzip\r\n" if gzipped else ""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall((head + "\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _watch(out: str, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _status(port, "/readyz") == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    for gzipped in (False, True):  # the scrape path, both ways, and the status page
        _status(port, "/metrics", gzipped=gzipped)
    _status(port, "/")
    with open(out, "w") as f:
        f.write("\n".join(sorted(sys.modules)) + "\n")
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    out, port, *args = sys.argv[1:]
    threading.Thread(target=_watch, args=(out, int(port)), daemon=True).start()
    from exporter.cli import main as run

    return run([*args, f"--web.listen-address=127.0.0.1:{port}"])


if __name__ == "__main__":
    sys.exit(main())
