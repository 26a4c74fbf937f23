"""A deadline for the whole HTTP exchange: connect, TLS handshake, response head and body.

httpx's timeouts bound each socket operation, not the exchange: an upstream or proxy that sends
its response head one byte every few seconds keeps every read inside `request_timeout` and holds
the request for hours (h11 reads a head of up to 16 KiB). The network backend below hands each
socket operation only the time left until the calling thread's deadline, so the exchange ends
when it runs out, whatever phase it is in.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpcore
import httpx

_local = threading.local()
# The text of the timeout a passed deadline raises, so callers tell it from a single slow read.
DEADLINE_PASSED = "the whole exchange did not finish within its deadline"


@contextlib.contextmanager
def deadline(seconds: float | None, monotonic: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Every socket operation of this thread ends within `seconds` from now (None: no deadline)."""
    outer: tuple[float, Callable[[], float]] | None = getattr(_local, "deadline", None)
    if seconds is not None and (outer is None or monotonic() + seconds < outer[0]):
        _local.deadline = (monotonic() + seconds, monotonic)
    try:
        yield
    finally:
        _local.deadline = outer


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """The time an operation may take: its own timeout, cut to what is left of the deadline."""
    current: tuple[float, Callable[[], float]] | None = getattr(_local, "deadline", None)
    if current is None:
        return timeout
    end, monotonic = current
    left = end - monotonic()
    if left <= 0:
        raise expired(DEADLINE_PASSED)
    return left if timeout is None else min(timeout, left)


T = TypeVar("T")


def _within(operation: Callable[[float | None], T], timeout: float | None, expired: type[Exception]) -> T:
    """Run a socket operation with the time left; a timeout because the deadline passed says so."""
    try:
        return operation(_left(timeout, expired))
    except httpcore.TimeoutException:
        _left(None, expired)  # raises DEADLINE_PASSED when that is why
        raise


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _within(lambda left: self._stream.read(max_bytes, left), timeout, httpcore.ReadTimeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _within(lambda left: self._stream.write(buffer, left), timeout, httpcore.WriteTimeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(_within(lambda left: self._stream.start_tls(
            ssl_context, server_hostname, left), timeout, httpcore.ConnectTimeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with every operation cut to the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(_within(lambda left: self._inner.connect_tcp(
            host, port, left, local_address, socket_options), timeout, httpcore.ConnectTimeout))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(_within(lambda left: self._inner.connect_unix_socket(
            path, left, socket_options), timeout, httpcore.ConnectTimeout))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install_deadlines(client: httpx.Client) -> httpx.Client:
    """Put DeadlineBackend under every transport of `client`, the proxies' from HTTPS_PROXY too.

    httpx builds its connection pools itself and takes no network backend, so the pools' backend is
    replaced after the fact; tests/test_transport.py fails if an httpx upgrade moves it.
    """
    # A mount of None is a NO_PROXY host: it goes through the client's own transport.
    transports = [t for t in (client._transport, *client._mounts.values()) if t is not None]
    found: list[Any] = [pool for pool in (getattr(t, "_pool", None) for t in transports)
                        if hasattr(pool, "_network_backend")]
    if len(found) != len(transports):
        raise RuntimeError("this httpx keeps its connection pools elsewhere: the whole-exchange "
                           "deadline cannot be installed; pin httpx to a version tests pass with")
    for pool in found:
        if not isinstance(pool._network_backend, DeadlineBackend):
            pool._network_backend = DeadlineBackend(pool._network_backend)
    return client
