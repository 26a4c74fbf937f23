"""Listeners: --web.listen-address as Go's net.Listen makes it (dual stack for `:port`), and the
sockets systemd passes by socket activation (TCP or Unix, refused clearly otherwise)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import MutableMapping

DEFAULT_PORT = 9867
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"


def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port`, `:port` or `[v6]:port` to (host, port); an empty host means every address."""
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and ":" in host
    # As Go's net.SplitHostPort: an IPv6 host needs its brackets, and nothing else has any.
    bad_host = (":" in host or "[" in host or "]" in host) and not bracketed
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or bad_host:
        raise ValueError(f"expected HOST:PORT with a port from 0 to 65535, such as {DEFAULT_LISTEN_ADDRESS}, "
                         f"127.0.0.1:{DEFAULT_PORT} or [::1]:{DEFAULT_PORT}, got {address[:60]!r}")
    return host[1:-1] if bracketed else host, int(port)


class ListenError(Exception):
    """A listener that cannot be opened; the message names the flag, the address and what to do."""


def _listen(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """A listening TCP socket; IPv6 wildcards take IPv4 too (IPV6_V6ONLY off, whatever the sysctl)."""
    # Made as a TCP socket by name: asyncio sets TCP_NODELAY only on those, and without it
    # keep-alive answers stall ~40 ms on delayed ACKs (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def bind_listener(address: str) -> socket.socket:
    """A listening socket for one --web.listen-address, as Go's net.Listen("tcp", ...) makes it.

    `:port` and `[::]:port` listen on every IPv4 and IPv6 address (one dual-stack socket), or on
    every IPv4 address where the host has no usable IPv6; `0.0.0.0:port` on IPv4 only.
    """
    host, port = parse_listen_address(address)
    try:
        if host not in ("", "::"):
            return _listen(socket.AF_INET6 if ":" in host else socket.AF_INET, host, port)
        try:
            return _listen(socket.AF_INET6, "::", port)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise
        return _listen(socket.AF_INET, "0.0.0.0", port)  # noqa: S104 - `:port` means every address
    except OSError as err:
        reason = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be used: {err.strerror}"
        raise ListenError(f"--web.listen-address: {address} {reason}; choose another address") from None


# systemd passes activated sockets from this descriptor on (sd_listen_fds(3)).
_SD_LISTEN_FDS_START = 3


def systemd_sockets(environ: MutableMapping[str, str] | None = None, *,
                    first_fd: int = _SD_LISTEN_FDS_START) -> list[socket.socket]:
    """The listening sockets systemd passed by socket activation (LISTEN_PID, LISTEN_FDS).

    The variables are removed, as sd_listen_fds(1) does, so child processes do not take them."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    listen_pid, count = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", "")
    env.pop("LISTEN_FDNAMES", None)
    if not listen_pid or not count:
        raise ListenError("--web.systemd-socket: systemd passed no socket (LISTEN_FDS is not set); start "
                          "the exporter from its .socket unit (deploy/systemd), or drop the flag")
    if listen_pid != str(os.getpid()) or not count.isdigit() or int(count) < 1:
        raise ListenError(f"--web.systemd-socket: LISTEN_PID={listen_pid} LISTEN_FDS={count} are not for "
                          "this process; start the exporter from its .socket unit, or drop the flag")
    sockets: list[socket.socket] = []
    try:
        for fd in range(first_fd, first_fd + int(count)):
            sockets.append(_passed_socket(fd))
    except ListenError:
        for sock in sockets:
            sock.close()  # the process ends; systemd keeps its own copies
        raise
    return sockets


_STREAM_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)


def _passed_socket(fd: int) -> socket.socket:
    """Descriptor `fd` as a listening stream socket (TCP or Unix), or one ListenError saying why not."""
    where = f"--web.systemd-socket: descriptor {fd}"
    try:
        kind = os.fstat(fd).st_mode
    except OSError:
        raise ListenError(f"{where} is not open, although LISTEN_FDS counts it; start the exporter "
                          "from its .socket unit") from None
    if not stat.S_ISSOCK(kind):
        raise ListenError(f"{where} is not a socket; use ListenStream= in the .socket unit")
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM or sock.family not in _STREAM_FAMILIES:
        sock.close()
        raise ListenError(f"{where} is not a stream socket; use ListenStream= in the .socket unit "
                          "(a TCP port or a Unix socket path)")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.close()
        raise ListenError(f"{where} is a connection, not a listening socket: the .socket unit has "
                          "Accept=yes; set Accept=no (the default), the exporter accepts connections itself")
    return sock
