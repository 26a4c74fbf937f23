"""logfmt and JSON log output, with every known secret and token redacted on the way out."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR}
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# JWTs, bearer values and long opaque runs (Entra's refresh tokens are not JWTs) are redacted even
# when nobody registered them: 100 characters of base64url with no space or colon are no word or URL
# a message needs. An absolute file path is such a run too, and an error must name its file: there
# only a segment between slashes that long is hidden (see _hide).
_LONG_RUN = 100
_TOKEN_PATTERNS = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
                             r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
                             rf"|[A-Za-z0-9._~+/-]{{{_LONG_RUN},}}=*")


def _hide(match: re.Match[str]) -> str:
    text = match.group()
    if text.startswith("/") and not text.startswith("//"):  # a path; "//" starts a URL's host
        return "/".join(REDACTED if len(part) >= _LONG_RUN else part for part in text.split("/"))
    return REDACTED


REDACTED = "[REDACTED]"
# The longest secret expected whole in upstream text: redaction reads this far past what is shown.
MAX_SECRET_LENGTH = 32 * 1024


class Redactor:
    """Replaces registered secrets (and anything that looks like a token) with [REDACTED].

    Secrets from the config live as long as it does; access tokens in a bounded ring; the refresh
    tokens of each token cache (its owner) as its current and previous generation, so one that was
    just rotated away, and may still be echoed by a failing request, stays hidden too.
    """

    def __init__(self, max_tokens: int = 256) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._tokens: deque[str] = deque(maxlen=max_tokens)
        self._owned: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._values: list[str] | None = []  # longest first; None when it must be worked out again

    def add_secret(self, value: str) -> None:
        if len(value) >= 4:
            with self._lock:
                self._secrets.add(value)
                self._values = None

    def add_token(self, value: str) -> None:
        with self._lock:
            if value not in self._tokens:
                self._tokens.append(value)
                self._values = None

    def keep(self, owner: str, values: Iterable[str]) -> None:
        """`owner`'s secrets are now `values`; the ones it held before stay hidden one generation."""
        current = frozenset(v for v in values if len(v) >= 4)
        with self._lock:
            held, _ = self._owned.get(owner, (frozenset(), frozenset()))
            if current != held:
                self._owned[owner] = (current, held)
                self._values = None

    def _all(self) -> list[str]:
        with self._lock:
            if self._values is None:
                owned = set().union(*(now | before for now, before in self._owned.values()))
                self._values = sorted(self._secrets | set(self._tokens) | owned, key=len, reverse=True)
            return self._values

    def __call__(self, text: str) -> str:
        for value in self._all():
            if value in text:
                text = text.replace(value, REDACTED)
        return _TOKEN_PATTERNS.sub(_hide, text)

    def shown(self, text: str, limit: int) -> str:
        """Upstream text as a message shows it: redacted while whole (a token cut in half would
        match nothing), then one line of printable characters, at most `limit` long."""
        flat = " ".join("".join(ch if ch.isprintable() else " "
                                for ch in self(text[: limit * 2 + MAX_SECRET_LENGTH])).split())
        return flat if len(flat) <= limit else flat[: limit - 1] + "…"


REDACTOR = Redactor()


class Throttled:
    """Decides whether a log line of one kind may go out: at most one per `every` seconds per key.

    What a client can trigger at will (bad requests, connection floods) must not flood the log;
    the line that goes out says how many were held back since the last one.
    """

    def __init__(self, every: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None to stay quiet; else the number of lines of this kind held back since the last."""
        now = self._monotonic()
        with self._lock:
            if now < self._next.get(key, float("-inf")):
                self._held[key] = self._held.get(key, 0) + 1
                return None
            if len(self._next) >= 1024:  # keys are few; never let them grow without bound
                self._next.clear()
                self._held.clear()
            self._next[key] = now + self._every
            return self._held.pop(key, 0)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _level(record: logging.LogRecord) -> str:
    return "warn" if record.levelno == logging.WARNING else record.levelname.lower()


# Every control character (C0, DEL, C1) in a logfmt value is escaped: a log line is one line, and
# upstream text in it must not move a terminal's cursor when someone tails the log.
_LOGFMT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_LOGFMT_SPECIAL = re.compile('[ ="\\\\\x00-\x1f\x7f-\x9f]')
_LOGFMT_ESCAPED = re.compile('["\\\\\x00-\x1f\x7f-\x9f]')


def _logfmt_escape(ch: str) -> str:
    return _LOGFMT_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not _LOGFMT_SPECIAL.search(text):
        return text
    escaped = _LOGFMT_ESCAPED.sub(lambda m: _logfmt_escape(m.group()), text)
    return f'"{escaped}"'


class _StructuredFormatter(logging.Formatter):
    """Turns a record and its `extra` fields into one redacted line; subclasses pick the encoding."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redact = redactor

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": _timestamp(record), "level": _level(record),
                                "logger": record.name, "msg": record.getMessage()}
        data.update(_fields(record))
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return self._redact(self.encode(data))

    def encode(self, data: dict[str, Any]) -> str:
        raise NotImplementedError


class LogfmtFormatter(_StructuredFormatter):
    def encode(self, data: dict[str, Any]) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in data.items())


class JsonFormatter(_StructuredFormatter):
    def encode(self, data: dict[str, Any]) -> str:
        return json.dumps(data, default=str)


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None,
                  redactor: Redactor = REDACTOR) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else LogfmtFormatter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # Their debug output carries request details we neither need nor want to vet for secrets.
    for noisy in ("httpx", "httpcore", "msal"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.WARNING))


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    """--log.level and --log.format, as Prometheus exporters spell them."""
    parser.add_argument("--log.level", dest="log_level", choices=list(LEVELS), default="info",
                        help="log level (default: info)")
    parser.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"],
                        default="logfmt", help="log format (default: logfmt)")
