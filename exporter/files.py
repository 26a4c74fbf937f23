"""Reading the files a config names without blocking and within a size stated per kind.

A FIFO (or a device) where a file belongs would block a plain open() or read() for ever, or read
without end (/dev/zero), on the thread that runs signal handlers; so every file is opened with
O_NONBLOCK, must be a regular file, and is read up to its kind's bound. A hung network mount can
still block in the kernel: `within` runs a load on a thread of its own and gives up on it in time.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

KiB, MiB = 1024, 1024 * 1024
# The most a file of each kind can hold; a larger one is the wrong file.
CONFIG_LIMIT = 4 * MiB  # --config.file and --web.config.file: thousands of tenants fit
SECRET_LIMIT = 64 * KiB  # a client secret, password, refresh token or federated token
CERTIFICATE_LIMIT = 1 * MiB  # a PEM certificate with its key and chain
CA_BUNDLE_LIMIT = 4 * MiB  # a PEM CA bundle (certifi's is about 300 KiB)
TOKEN_CACHE_LIMIT = 4 * MiB  # an MSAL token cache with a few accounts
# How long loading the config may take before a reload (or start-up) gives up: reading the files
# takes milliseconds, so only a hung mount gets near it.
LOAD_TIMEOUT = 10.0

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


class FileReadError(OSError):
    """A file cannot be read as the config needs it; str() is one line saying why."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(errno.ENOENT if missing else errno.EINVAL, message)
        self.message = message
        self.missing = missing

    def __str__(self) -> str:
        return self.message


def _size(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB else f"{limit // KiB} KiB"


def read_file(path: Path | str, limit: int) -> bytes:
    """The whole of a regular file of at most `limit` bytes; FileReadError, with the reason, else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileReadError(f"file {path} does not exist", missing=True) from None
    except OSError as err:
        raise FileReadError(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise FileReadError(f"{path} is {kind}, not a regular file; point the setting at a file")
        if info.st_size > limit:
            raise FileReadError(f"{path} is larger than {_size(limit)}, more than such a file holds; "
                                f"is it the right file?")
        chunks, total = [], 0
        while chunk := os.read(fd, min(64 * KiB, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while being read
                raise FileReadError(f"{path} is larger than {_size(limit)}, more than such a file "
                                    f"holds; is it the right file?")
        return b"".join(chunks)
    except OSError as err:
        if isinstance(err, FileReadError):
            raise
        raise FileReadError(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    finally:
        os.close(fd)


def read_text(path: Path | str, limit: int) -> str:
    """read_file as UTF-8 text; undecodable bytes are a FileReadError too."""
    data = read_file(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileReadError(f"{path} is not UTF-8 text") from None


def check_file(path: Path | str, limit: int) -> None:
    """That `path` can be read as a file of its kind, for files a library opens itself (TLS)."""
    read_file(path, limit)


T = TypeVar("T")


def within(load: Callable[[], T], what: str, timeout: float | None = None) -> T:
    """`load()` on a thread of its own; a TimeoutError naming `what` if it is not done in time.

    The calling thread (the main one, which runs signal handlers) never waits on a read that may
    never return; a load stuck on a hung mount is left behind, which is all a process can do.
    """
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = load()
        except BaseException as err:  # handed to the caller
            box["error"] = err

    limit = LOAD_TIMEOUT if timeout is None else timeout
    thread = threading.Thread(target=run, name=f"load {what}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise TimeoutError(f"reading {what} took over {limit:g}s: is a file it names on a mount that "
                           f"does not answer?")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
