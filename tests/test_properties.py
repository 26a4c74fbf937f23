"""Property-based: random configs end in a one-line error per problem, random payloads never crash."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString

from exporter import cli
from exporter.collectors.dap_customers import DapCustomer, DapCustomers
from exporter.collectors.dap_statistics import DapStatistics, DapStatisticsClient
from exporter.collectors.gdap_relationships import GDAP_STATUSES, GdapRelationship, GdapRelationships
from exporter.config import ConfigError
from exporter.exposition import reference_render, render
from exporter.families import _go_string
from exporter.model import REASONS, PollError, Snapshot, SourceView, ThresholdBuckets
from exporter.webconfig import load_web_config
from tests.conftest import StaticToken

TODAY = dt.date(2026, 11, 23)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIG_KEYS = ["poll_interval", "request_timeout", "inactive_thresholds_days", "poll_concurrency",
               "endpoints", "tenants", "authority_host", "dap_statistics_url", "scope", "ca_file",
               "name", "tenant_id", "client_id", "auth", "method", "token_cache_file",
               "refresh_token_file", "client_secret_file", "client_secret_env", "username",
               "password_file", "client_secret", "refresh_token", "password"]
WEB_KEYS = ["tls_server_config", "http_server_config", "basic_auth_users", "cert_file", "key_file",
            "client_auth_type", "client_ca_file", "min_version", "max_version", "headers", "http2",
            "X-Frame-Options", "prometheus"]
SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["1m", "15m", "0s", "-5m", "1h30m", "30", "refresh_token",
                              "client_credentials", "username_password", "contoso", "TLS13",
                              "RequireAndVerifyClientCert", "https://login.microsoftonline.com",
                              "http://x", "/nonexistent/file", "$2b$10$" + "a" * 53, ""])
           | st.text(max_size=20))


def documents(keys: list[str]) -> st.SearchStrategy[Any]:
    """Nested YAML-able values whose keys are mostly the real ones, so validation goes deep."""
    return st.recursive(SCALARS, lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(keys) | st.text(max_size=8), children, max_size=6), max_leaves=30)


@contextlib.contextmanager
def written(text: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        yield path


def config_check(path: Path) -> tuple[int, str, str]:
    """Run `--config.check` in-process, as the CLI does, and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--config.file", str(path), "--config.check"])
    finally:
        root.handlers[:], root.level = saved
    return code, out.getvalue(), err.getvalue()


def assert_clear_errors(code: int, out: str, err: str) -> None:
    assert code in (0, 2), err
    if code == 0:
        assert out.strip() == "OK"
        return
    lines = err.splitlines()
    assert lines, "exit code 2 without an error"
    for line in lines:
        assert "Traceback" not in line
        assert ": " in line.strip(), f"error without a field or cause: {line!r}"


@SETTINGS
@given(documents(CONFIG_KEYS))
def test_random_config_documents_end_in_clear_errors(document: Any) -> None:
    """Any YAML document as config: OK, or exit 2 with one `field: problem` line per error."""
    with written(yaml.safe_dump(document)) as path:
        assert_clear_errors(*config_check(path))


@SETTINGS
@given(st.text(max_size=200))
def test_random_text_as_config_ends_in_clear_errors(text: str) -> None:
    """Any text as config (broken YAML included): exit 2 with clear lines, never a traceback."""
    with written(text) as path:
        assert_clear_errors(*config_check(path))


# Pieces of YAML syntax that trip parsers: complex keys, anchors and aliases, flow collections,
# tags, huge numbers, and bytes that are not UTF-8.
YAML_PIECES = st.sampled_from([
    b"? ", b": ", b"- ", b"[", b"]", b"{", b"}", b", ", b"&a ", b"*a", b"&b ", b"*b", b"!!set ",
    b"!!binary ", b"!!python/name:os.system ", b"\n", b"  ", b"tenants", b"poll_concurrency",
    b"basic_auth_users", b"tls_server_config", b"min_version", b"9" * 5000, b"\xff", b"\xc3",
    b"'", b'"', b"#", b"%YAML 1.1\n", b"---\n", b"\t", b"x"])


@SETTINGS
@given(st.lists(YAML_PIECES, max_size=40).map(b"".join))
def test_random_yaml_bytes_end_in_clear_errors(data: bytes) -> None:
    """Any bytes built of YAML syntax, as config and as web config: a clear error, never a traceback
    (hardening 7 and 8: bad encoding, complex keys, aliases, unconvertible numbers)."""
    with written("") as path:
        path.write_bytes(data)
        assert_clear_errors(*config_check(path))
        errors: list[str] = []
        try:
            load_web_config(path)
        except ConfigError as err:
            errors = err.errors
    assert all("\n" not in line and ": " in line for line in errors)


@SETTINGS
@given(documents(WEB_KEYS) | st.text(max_size=100).map(lambda t: {"raw": t}))
def test_random_web_config_raises_only_config_error(document: Any) -> None:
    """Any web config document loads or raises ConfigError with one-line messages."""
    errors: list[str] = []
    with written(yaml.safe_dump(document)) as path:
        try:
            load_web_config(path)
        except ConfigError as err:
            errors = err.errors or ["(ConfigError without a line)"]
    assert all("\n" not in line and ": " in line for line in errors)


DATES = (st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(lambda d: f"{d.month}/{d.day}/{d.year}")
         | st.dates().map(dt.date.isoformat) | st.text(max_size=12)
         | st.sampled_from(["13/45/2020", "0/0/0", "6/18/2021 12:00:00 AM", "2021-06-18T00:00:00Z"]))
COUNTS = st.integers(-5, 10**15) | st.floats() | st.text(max_size=5) | st.none() | st.booleans()
ENTRY = st.fixed_dictionaries({}, optional={"date": DATES | COUNTS, "count": COUNTS}) | SCALARS
PAYLOADS = (st.fixed_dictionaries({}, optional={
    "totalDapCustomerCount": COUNTS,
    "establishedDapCount": st.lists(ENTRY, max_size=20) | SCALARS,
    "inactiveDapCount": st.lists(ENTRY, max_size=20) | SCALARS,
}) | documents(["totalDapCustomerCount", "establishedDapCount", "inactiveDapCount", "date", "count"]))


def fetch_body(body: bytes) -> SourceView:
    """Serve `body` as the API's 200 answer and turn the fetch into a tenant snapshot."""
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, content=body, headers={"Content-Type": "application/json"}))
    with httpx.Client(transport=transport) as http:
        client = DapStatisticsClient("contoso", http, "https://pc.test/stats", StaticToken(),
                                     clock=lambda: 1_795_400_000.0)
        try:
            stats = client.fetch()
        except PollError as err:
            error = err
        else:
            return SourceView("contoso", "dap_statistics", data=stats, attempted=True, last_poll_success=True)
    assert error.message
    assert "\n" not in error.message
    return SourceView("contoso", "dap_statistics", attempted=True, last_error_reason=error.reason,
                          last_error_message=error.message)


@SETTINGS
@given(PAYLOADS)
def test_random_payloads_end_in_a_snapshot_or_a_classified_error(payload: Any) -> None:
    """Any JSON answer yields statistics or a PollError, and the snapshot always renders."""
    tenant = fetch_body(json.dumps(payload).encode())
    body = render(Snapshot((tenant,)), today=TODAY, thresholds=(30, 60, 90), poll_interval=900)
    assert b'partnercenter_exporter_poll_success{collector="dap_statistics",tenant="contoso"}' in body


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_end_in_a_classified_error(body: bytes) -> None:
    """Any non-JSON or odd bytes with status 200 is a classified error, never an exception."""
    tenant = fetch_body(body)
    assert tenant.last_poll_success or tenant.last_error_reason == "invalid_response"


# --- The fast renderer against prometheus_client's -------------------------------------------

DAYS = st.dates(min_value=dt.date(2015, 1, 1), max_value=TODAY)
COUNTS = st.integers(0, 10**9)  # large counts switch Go's formatting to exponents
NAMES = st.text(st.sampled_from('ab-_."\\\n é'), min_size=1, max_size=12)
TIMES = st.none() | st.floats(0, 4e9, allow_nan=False)
STAMPS = st.floats(0, 4e9, allow_nan=False)
LABEL_TEXT = st.text(st.sampled_from('ab-_."\\\n é{}='), max_size=12)
RELATIONSHIPS = st.builds(
    GdapRelationship, id=LABEL_TEXT, display_name=LABEL_TEXT, customer_id=st.sampled_from(["", *"abcdef"]),
    customer_name=LABEL_TEXT, status=st.sampled_from(GDAP_STATUSES), end_time=TIMES,
    auto_extend=st.booleans(), global_admin=st.booleans())
COLLECTOR_DATA = st.one_of(
    st.tuples(st.just("dap_statistics"), st.none() | st.builds(
        DapStatistics, total_customers=COUNTS, established=st.dictionaries(DAYS, COUNTS, max_size=20),
        inactive=st.dictionaries(DAYS, COUNTS, max_size=20))),
    st.tuples(st.just("gdap_relationships"), st.none() | st.builds(
        GdapRelationships, st.lists(RELATIONSHIPS, max_size=8).map(tuple), fetched_at=STAMPS)),
    st.tuples(st.just("dap_customers"), st.none() | st.builds(
        DapCustomers, st.lists(st.builds(DapCustomer, id=st.sampled_from("abcdef"), name=LABEL_TEXT,
                                         last_signin=TIMES, start_time=TIMES,
                                         global_admin_signins=COUNTS),
                               max_size=6, unique_by=lambda c: c.id).map(tuple))))
TENANTS = st.builds(
    lambda name, data, **fields: SourceView(name=name, collector=data[0], data=data[1], **fields),
    NAMES, COLLECTOR_DATA,
    attempted=st.booleans(), last_poll_success=st.booleans(), last_success_time=TIMES,
    last_duration=TIMES, last_error_reason=st.none() | st.sampled_from(REASONS),
    errors_total=st.dictionaries(st.sampled_from(REASONS), COUNTS, max_size=3),
    api_requests_total=st.dictionaries(st.sampled_from(["200", "401", "429", "500"]), COUNTS, max_size=3),
    skipped_entries_total=COUNTS, token_expires_at=TIMES, token_store_pending=st.none() | st.booleans())


@SETTINGS
@given(st.lists(TENANTS, max_size=6, unique_by=lambda t: (t.name, t.collector)),
       st.lists(st.integers(1, 3650), min_size=1, max_size=4, unique=True),
       st.sampled_from([60.0, 900.0, 86400.0, 1e7]),
       st.lists(st.tuples(st.sampled_from(["config", "web"]), st.booleans(), TIMES.filter(bool)),
                max_size=2, unique_by=lambda r: r[0]))
def test_fast_renderer_is_byte_identical_to_prometheus_client(
        tenants: list[SourceView], thresholds: list[int], interval: float,
        reloads: list[tuple[str, bool, float]]) -> None:
    """For any snapshot, render() gives exactly the bytes prometheus_client's generate_latest gives."""
    snapshot = Snapshot(tuple(tenants))
    assert render(snapshot, today=TODAY, thresholds=thresholds, poll_interval=interval, reloads=reloads) == \
        reference_render(snapshot, today=TODAY, thresholds=thresholds, poll_interval=interval,
                         reloads=reloads)


@SETTINGS
@given(st.floats() | st.integers(-(2**63), 2**63))
@example(12345678.0)
@example(1e7)
@example(123456789012.5)
@example(float("inf"))
@example(float("-inf"))
@example(float("nan"))
@example(-0.0)
def test_values_are_written_as_prometheus_client_writes_them(value: float) -> None:
    """Every float and int is written exactly as prometheus_client's floatToGoString writes it."""
    assert _go_string(value) == floatToGoString(value)  # type: ignore[no-untyped-call]


@SETTINGS
@given(DAYS, st.lists(st.integers(1, 3650), max_size=5))
def test_threshold_buckets_agree_with_day_arithmetic(day: dt.date, thresholds: list[int]) -> None:
    """The bucket of a day is the largest threshold it is more than that many days before today, or 0."""
    expected = max((t for t in thresholds if (TODAY - day).days > t), default=0)
    assert ThresholdBuckets(thresholds, TODAY)(day) == expected


@SETTINGS
@given(st.dictionaries(DAYS, st.integers(0, 1000), max_size=20), st.lists(st.integers(1, 3650), max_size=5))
def test_past_counts_agree_with_day_arithmetic(counts: dict[dt.date, int], thresholds: list[int]) -> None:
    """Per threshold, past() sums exactly the counts of the days more than that many days ago."""
    expected = {t: sum(n for day, n in counts.items() if (TODAY - day).days > t) for t in thresholds}
    assert ThresholdBuckets(thresholds, TODAY).past(counts) == expected
