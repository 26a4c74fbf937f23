"""--web.systemd-socket: TCP and Unix sockets serve; what systemd should not pass is one clear line."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.http.listen import ListenError, systemd_sockets
from exporter.simulator import Simulator
from tests.conftest import require_binary
from tests.helpers.e2e import ROOT, exporter_command, wait_for, write_config

# Far above what a test process has open, so the descriptor after it is free.
HIGH_FD = 900


@contextlib.contextmanager
def passed(sock_or_fd: socket.socket | int) -> Iterator[int]:
    """A descriptor placed at HIGH_FD, as systemd places its sockets from 3 on."""
    fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno()
    os.dup2(fd, HIGH_FD)
    try:
        yield HIGH_FD
    finally:
        with contextlib.suppress(OSError):
            os.close(HIGH_FD)


def _environ(count: int) -> dict[str, str]:
    return {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": str(count)}


def test_more_descriptors_counted_than_passed_is_one_error() -> None:
    """LISTEN_FDS=2 with one descriptor: a ListenError naming the missing one, no traceback."""
    with (socket.create_server(("127.0.0.1", 0)) as server, passed(server) as fd,
          pytest.raises(ListenError, match=f"descriptor {fd + 1} is not open")):
        systemd_sockets(_environ(2), first_fd=fd)


def test_a_fifo_as_descriptor_is_one_error(tmp_path: Path) -> None:
    """A FIFO where a socket belongs: a ListenError saying it is not a socket."""
    os.mkfifo(tmp_path / "fifo")
    fifo = os.open(tmp_path / "fifo", os.O_RDWR | os.O_NONBLOCK)
    try:
        with passed(fifo) as fd, pytest.raises(ListenError, match=f"descriptor {fd} is not a socket"):
            systemd_sockets(_environ(1), first_fd=fd)
    finally:
        os.close(fifo)


def test_a_connection_passed_by_accept_yes_is_refused() -> None:
    """A connected socket (Accept=yes in the .socket unit) is refused, naming the setting to change."""
    left, right = socket.socketpair()
    with left, right, passed(left) as fd, pytest.raises(ListenError, match="Accept=yes; set Accept=no"):
        systemd_sockets(_environ(1), first_fd=fd)


def _get(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(20)
        client.connect(str(path))
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.e2e
def test_a_unix_socket_from_systemd_serves_every_request(sim: Simulator, tmp_path: Path) -> None:
    """ListenStream=/path: scrapes over the Unix socket are answered, one after another, and the
    listening line names the path."""
    launcher = require_binary("systemd-socket-activate")
    path = tmp_path / "pcx.sock"
    log_path = tmp_path / "exporter.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([launcher, "-l", str(path), *exporter_command(
            "--config.file", str(write_config(sim, tmp_path)), "--web.systemd-socket")],
            stderr=log, stdout=subprocess.DEVNULL, cwd=ROOT)
        try:
            wait_for(path.exists, 10, "the launcher's socket")
            for _ in range(3):
                answer = _get(path)
                assert answer.startswith(b"HTTP/1.1 200 OK")
                assert b"partnercenter_exporter_build_info" in answer
            wait_for(lambda: f"listeners=unix:{path}" in log_path.read_text(), 10, "the listening line")
            assert proc.poll() is None
            assert "Traceback" not in log_path.read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.e2e
def test_accept_yes_is_refused_in_one_line(sim: Simulator, tmp_path: Path) -> None:
    """Started per connection (Accept=yes), the exporter exits 1 with one line naming the setting."""
    launcher = require_binary("systemd-socket-activate")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "exporter.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([launcher, "--accept", "-l", f"127.0.0.1:{port}", *exporter_command(
            "--config.file", str(write_config(sim, tmp_path)), "--web.systemd-socket")],
            stderr=log, stdout=subprocess.DEVNULL, cwd=ROOT)
        try:
            wait_for(lambda: "Listening on" in log_path.read_text(), 10, "the launcher to listen")
            with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
                client.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                wait_for(lambda: "Accept=yes" in log_path.read_text(), 20, "the refusal")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    text = log_path.read_text()
    assert "is a connection, not a listening socket: the .socket unit has Accept=yes" in text
    assert "Traceback" not in text
