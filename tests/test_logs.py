"""Log output: logfmt and JSON shapes, extra fields, and redaction of secrets and token-like text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from exporter.logs import Redactor, setup_logging


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, Redactor]]:
    stream, redactor = io.StringIO(), Redactor()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield stream, redactor
    root.handlers[:], root.level = saved[0], saved[1]


def test_logfmt_line_has_fields_and_quotes(capture: tuple[io.StringIO, Redactor]) -> None:
    """logfmt lines carry ts, level, logger, msg and extras, quoting values with spaces."""
    stream, redactor = capture
    setup_logging("info", "logfmt", stream, redactor)
    logging.getLogger("exporter.test").warning("poll failed", extra={"tenant": "contoso",
                                                                      "error": 'bad "x" y'})
    line = stream.getvalue().strip()
    assert " level=warn logger=exporter.test msg=\"poll failed\" tenant=contoso " in line
    assert line.endswith('error="bad \\"x\\" y"')


def test_json_line_is_one_object(capture: tuple[io.StringIO, Redactor]) -> None:
    """JSON format writes one object per line with the extra fields as keys."""
    stream, redactor = capture
    setup_logging("debug", "json", stream, redactor)
    logging.getLogger("exporter.test").debug("hello", extra={"tenant": "t"})
    data = json.loads(stream.getvalue())
    assert (data["level"], data["msg"], data["tenant"]) == ("debug", "hello", "t")


def test_level_filters(capture: tuple[io.StringIO, Redactor]) -> None:
    """At warn, info lines are dropped."""
    stream, redactor = capture
    setup_logging("warn", "logfmt", stream, redactor)
    logging.getLogger("exporter.test").info("quiet")
    assert stream.getvalue() == ""


def test_registered_secrets_and_tokens_are_redacted(capture: tuple[io.StringIO, Redactor]) -> None:
    """Registered secrets, tokens, JWTs and bearer values never reach the output."""
    stream, redactor = capture
    redactor.add_secret("client-secret-value")
    redactor.add_token("opaque-access-token-123")
    setup_logging("info", "json", stream, redactor)
    logging.getLogger("exporter.test").error(
        "oops client-secret-value opaque-access-token-123 "
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl "
        "Authorization: Bearer abcdefghijklmnop")
    output = stream.getvalue()
    for leaked in ("client-secret-value", "opaque-access-token-123", "eyJ0eXAiOiJKV1Qi", "abcdefghijklmnop"):
        assert leaked not in output
    assert output.count("[REDACTED]") == 4


def test_a_secret_cut_in_half_by_the_length_limit_is_still_hidden() -> None:
    """Upstream text is redacted while whole: a token the 160-character cut would halve leaves no part."""
    redactor = Redactor()
    token = "0.AXoA" + "k" * 30 + "-opaque-refresh-token-" + "q" * 30  # under the 100-character pattern
    redactor.keep("contoso", [token])
    shown = redactor.shown("x" * 120 + " " + token + " trailing", 160)
    assert "kkkk" not in shown
    assert shown.endswith("[REDACTED] trailing")


def test_a_rotated_refresh_token_stays_hidden_one_generation() -> None:
    """After a rotation the previous refresh token (still echoable) is hidden; two rotations on, not."""
    redactor = Redactor()
    redactor.keep("contoso", ["rt-generation-1"])
    redactor.keep("contoso", ["rt-generation-2"])
    assert redactor("rt-generation-1 rt-generation-2") == "[REDACTED] [REDACTED]"
    redactor.keep("contoso", ["rt-generation-3"])
    assert redactor("rt-generation-1") == "rt-generation-1"


def test_long_opaque_runs_are_hidden_unregistered() -> None:
    """A 100-character base64url run (an Entra refresh token's shape) is hidden without registration."""
    opaque = "0.AXoA" + "Ab9_-" * 20
    assert Redactor()(f"refresh_token={opaque} path /var/lib/partnercenter-exporter/cache.json") == \
        "refresh_token=[REDACTED] path /var/lib/partnercenter-exporter/cache.json"


def test_a_long_file_path_stays_readable_but_a_token_inside_it_does_not() -> None:
    """An absolute path of 100 characters or more is named whole (an error must say which file),
    yet a segment of it that long is hidden; a URL's long run (after "https:") is hidden whole."""
    path = ("/tmp/pytest-of-root/pytest-30/popen-gw0/test_production_config_passes_as_mounted0"
            "/run/secrets/refresh-token")
    assert len(path) >= 100
    redactor = Redactor()
    assert redactor(f"file {path} does not exist") == f"file {path} does not exist"
    opaque = "0.AXoA" + "Ab9_-" * 20
    assert redactor(f"file /var/lib/{opaque}/cache.json") == "file /var/lib/[REDACTED]/cache.json"
    assert redactor(f"GET https://login.example/{opaque}") == "GET https:[REDACTED]"
