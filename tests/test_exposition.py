"""Collector: golden exposition, threshold arithmetic, pre-rendered gzip and day-change re-render."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import gzip
import os
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from exporter import exposition
from exporter.collectors import Context
from exporter.collectors.dap_customers import DapCustomer, DapCustomers
from exporter.collectors.dap_statistics import DapStatistics
from exporter.collectors.gdap_relationships import GDAP_STATUSES, GdapRelationships
from exporter.collectors.migration import inactive_by_coverage
from exporter.exposition import Publisher, render
from exporter.model import REASONS, Snapshot, SourceView, ThresholdBuckets
from tests.conftest import require_binary
from tests.helpers.samples import DAY, NOW, TODAY, relationship, sample_snapshot, signed_in

GOLDEN = Path(__file__).parent / "golden" / "exposition.prom"


def test_exposition_matches_golden_file() -> None:
    """The rendered exposition of a known snapshot is byte-identical to the golden file."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(30, 60, 90), poll_interval=900,
                  build=("1.2.3", "0123abc", "3.11.0"),
                  reloads=(("config", True, NOW - 3600), ("web", False, NOW - 7200)))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_bytes(body)
    assert body.decode() == GOLDEN.read_text()


@pytest.mark.e2e
def test_golden_file_passes_promtool_check_metrics() -> None:
    """The golden exposition passes `promtool check metrics` with no findings."""
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_bytes(),
                            capture_output=True, timeout=30, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


def test_over_threshold_counts_are_strictly_older_than_threshold() -> None:
    """A sign-in exactly N days ago is not over N; one day more is."""
    inactive = {TODAY - dt.timedelta(days=90): 1, TODAY - dt.timedelta(days=91): 2}
    assert ThresholdBuckets((89, 90, 91), TODAY).past(inactive) == {89: 3, 90: 2, 91: 0}


def test_every_reason_is_precreated_at_zero() -> None:
    """A tenant with no errors still exposes every reason at 0."""
    body = render(Snapshot((SourceView("x", "dap_statistics", attempted=True, last_poll_success=True),)),
                  today=TODAY, thresholds=(90,), poll_interval=900).decode()
    for reason in REASONS:
        assert (f'partnercenter_exporter_poll_errors_total{{collector="dap_statistics",reason="{reason}",'
                f'tenant="x"}} 0.0') in body


def test_failed_poll_keeps_last_good_data_in_exposition() -> None:
    """A tenant whose last poll failed still exposes the data of its last success."""
    stats = DapStatistics(total_customers=7)
    tenant = SourceView("x", "dap_statistics", data=stats, attempted=True, last_poll_success=False,
                            last_error_reason="timeout", last_success_time=1.0)
    body = render(Snapshot((tenant,)), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert 'partnercenter_dap_customers{tenant="x"} 7.0' in body
    assert 'partnercenter_exporter_poll_success{collector="dap_statistics",tenant="x"} 0.0' in body
    assert ('partnercenter_exporter_last_poll_error{collector="dap_statistics",reason="timeout",'
            'tenant="x"} 1.0') in body


def test_publisher_prerenders_identity_and_gzip_bodies() -> None:
    """publish() renders once; the gzip body is the same exposition, compressed."""
    publisher = Publisher((30, 60, 90), poll_interval=900, clock=lambda: 1795435200.0)
    publisher.publish(sample_snapshot())
    current = publisher.current
    assert gzip.decompress(current.gzip_body) == current.body
    assert b"partnercenter_dap_customers" in current.body


def test_publisher_rerenders_when_utc_day_changes() -> None:
    """Crossing UTC midnight re-renders, so the over-threshold counts age without a new poll."""
    now = [dt.datetime(2026, 11, 23, 23, 59, tzinfo=dt.UTC).timestamp()]
    stats = DapStatistics(total_customers=1, inactive={TODAY - dt.timedelta(days=90): 1})
    publisher = Publisher((90,), poll_interval=900, clock=lambda: now[0])
    publisher.publish(Snapshot((SourceView("x", "dap_statistics", data=stats, attempted=True),)))
    over = 'partnercenter_dap_inactive_customers_over_threshold{tenant="x",threshold_days="90"}'
    assert f"{over} 0.0".encode() in publisher.current.body
    assert publisher.refresh_if_new_day() is False
    now[0] += 120
    assert publisher.refresh_if_new_day() is True
    assert f"{over} 1.0".encode() in publisher.current.body


@pytest.mark.parametrize("thresholds", [(90,), (7, 30, 60, 90, 180)])
def test_one_series_per_threshold(thresholds: tuple[int, ...]) -> None:
    """Each configured threshold yields exactly one over-threshold series per tenant."""
    snapshot = Snapshot((SourceView("x", "dap_statistics", data=DapStatistics(total_customers=0)),))
    body = render(snapshot, today=TODAY, thresholds=thresholds, poll_interval=900).decode()
    assert body.count("partnercenter_dap_inactive_customers_over_threshold{") == len(thresholds)


def test_inactive_dates_carry_the_largest_threshold_they_exceed() -> None:
    """Each per-date series names the largest threshold its date is past (exactly N days is not past N)."""
    ages = {0: "0", 30: "0", 31: "30", 61: "60", 90: "60", 91: "90", 900: "90"}
    stats = DapStatistics(total_customers=7, inactive={TODAY - dt.timedelta(days=a): 1 for a in ages})
    body = render(Snapshot((SourceView("x", "dap_statistics", data=stats),)), today=TODAY,
                  thresholds=(30, 60, 90), poll_interval=900).decode()
    for age, bucket in ages.items():
        day = (TODAY - dt.timedelta(days=age)).isoformat()
        assert (f'partnercenter_dap_inactive_customers{{inactive_over_days="{bucket}",'
                f'last_signin_date="{day}",tenant="x"}} 1.0') in body


def test_poll_interval_is_exported_per_tenant() -> None:
    """The configured poll interval is a gauge per tenant, so staleness rules can count intervals."""
    snapshot = Snapshot((SourceView("x", "dap_statistics"), SourceView("y", "dap_statistics")))
    body = render(snapshot, today=TODAY, thresholds=(90,), poll_interval=600).decode()
    assert 'partnercenter_exporter_poll_interval_seconds{collector="dap_statistics",tenant="x"} 600.0' in body
    assert 'partnercenter_exporter_poll_interval_seconds{collector="dap_statistics",tenant="y"} 600.0' in body


def _count_renders(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Record, per part (data, health), the tenants whose lines the renderer renders afresh."""
    calls: dict[str, list[str]] = {"data": [], "health": []}
    for part, function in (("data", exposition._data_lines), ("health", exposition._health_lines)):
        def counting(name: str, *args: Any, _part: str = part, _function: Any = function) -> Any:
            calls[_part].append(name)
            return _function(name, *args)
        monkeypatch.setattr(exposition, f"_{part}_lines", counting)
    return calls


def test_a_publish_renders_only_the_tenants_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """After one tenant's poll with unchanged data, the next render renders that tenant's health
    lines only and reuses all data lines, and the result equals a render from scratch."""
    calls = _count_renders(monkeypatch)
    renderer = exposition.Renderer(build=("1.2.3", "0123abc", "3.11.0"))
    first = sample_snapshot()
    renderer.render(first, today=TODAY, thresholds=(30, 60, 90), poll_interval=900)
    assert sorted(calls["data"]) == sorted(calls["health"]) == ["contoso", "fabrikam", "northwind"]
    calls["data"].clear()
    calls["health"].clear()
    changed = dataclasses.replace(first.views[0], errors_total={"auth": 4})
    second = Snapshot((changed, *first.views[1:]))
    assert changed.name == "fabrikam"
    pieces = renderer.render(second, today=TODAY, thresholds=(30, 60, 90), poll_interval=900)
    assert calls == {"data": [], "health": ["fabrikam"]}
    assert b"".join(pieces) == render(second, today=TODAY, thresholds=(30, 60, 90), poll_interval=900,
                                      build=("1.2.3", "0123abc", "3.11.0"))
    calls["data"].clear()
    calls["health"].clear()
    renderer.render(second, today=TODAY + dt.timedelta(days=1), thresholds=(30, 60, 90), poll_interval=900)
    assert len(calls["data"]) == 3  # a new day changes every tenant's over-threshold counts


def test_new_data_re_renders_that_tenants_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A view with a new data object, even an equal one, re-renders its tenant's data lines."""
    calls = _count_renders(monkeypatch)
    renderer = exposition.Renderer(build=("1.2.3", "0123abc", "3.11.0"))
    first = sample_snapshot()
    renderer.render(first, today=TODAY, thresholds=(30, 60, 90), poll_interval=900)
    calls["data"].clear()
    at, view = next((i, view) for i, view in enumerate(first.views) if view.data is not None)
    views = list(first.views)
    views[at] = dataclasses.replace(view, data=copy.copy(view.data))
    second = Snapshot(tuple(views))
    pieces = renderer.render(second, today=TODAY, thresholds=(30, 60, 90), poll_interval=900)
    assert calls["data"] == [view.name]
    assert b"".join(pieces) == render(second, today=TODAY, thresholds=(30, 60, 90), poll_interval=900,
                                      build=("1.2.3", "0123abc", "3.11.0"))


def _large_snapshot(tenants: int) -> Snapshot:
    """Tenants whose statistics hold enough dates for a data part above GZIP_KEEP_FROM."""
    dates = {TODAY - dt.timedelta(days=day): day for day in range(1, 400)}
    return Snapshot(tuple(
        SourceView(f"t{i:03}", "dap_statistics", attempted=True, last_poll_success=True,
                   data=DapStatistics(total_customers=500, established=dates, inactive=dates))
        for i in range(tenants)))


def test_a_large_unchanged_data_part_is_compressed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above GZIP_KEEP_FROM, a publish whose data part is unchanged compresses only the rest, a
    change compresses it again, and each gzip body decodes to its text body."""
    compressed: list[int] = []
    original = exposition.gzip_pieces

    def counting(pieces: list[bytes], *args: Any) -> Any:
        compressed.append(sum(len(piece) for piece in pieces))
        return original(pieces, *args)

    monkeypatch.setattr(exposition, "gzip_pieces", counting)
    snapshot = _large_snapshot(20)
    publisher = Publisher((30, 60, 90), poll_interval=900, clock=lambda: NOW)
    publisher.publish(snapshot)
    assert compressed[-1] >= exposition.GZIP_KEEP_FROM
    compressed.clear()
    health_only = Snapshot((dataclasses.replace(snapshot.views[0], last_duration=1.5), *snapshot.views[1:]))
    publisher.publish(health_only)
    assert compressed == []
    assert gzip.decompress(publisher.current.gzip_body) == publisher.current.body
    assert b'duration_seconds{collector="dap_statistics",tenant="t000"} 1.5' in publisher.current.body
    new_data = Snapshot((snapshot.views[0], dataclasses.replace(snapshot.views[1],
                                                                data=copy.copy(snapshot.views[1].data)),
                         *snapshot.views[2:]))
    publisher.publish(new_data)
    assert len(compressed) == 1
    assert compressed[0] >= exposition.GZIP_KEEP_FROM
    assert gzip.decompress(publisher.current.gzip_body) == publisher.current.body


def test_a_small_data_part_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below GZIP_KEEP_FROM, each publish compresses the whole body again and keeps no compressor."""
    compressed: list[int] = []
    original = exposition.gzip_pieces

    def counting(pieces: list[bytes], *args: Any) -> Any:
        compressed.append(len(pieces))
        return original(pieces, *args)

    monkeypatch.setattr(exposition, "gzip_pieces", counting)
    publisher = Publisher((30, 60, 90), poll_interval=900, clock=lambda: NOW)
    publisher.publish(sample_snapshot())
    publisher.publish(sample_snapshot())
    assert len(compressed) == 3  # the empty snapshot at start, then both publishes
    assert publisher._gzip_data is None
    assert gzip.decompress(publisher.current.gzip_body) == publisher.current.body


def test_large_bodies_keep_big_pieces_without_copying_them() -> None:
    """Above JOIN_WHOLE_BELOW, pieces of 64 KiB or more are kept as the same objects, small runs
    are joined, and the segments still add up to the whole body; below it, one segment."""
    big = [bytes([65 + i % 26]) * 300_000 for i in range(15)]
    small = [b"x" * 100 for _ in range(2000)]
    pieces = [*small[:1000], *big, *small[1000:]]
    result = exposition.segments(pieces)
    assert b"".join(result) == b"".join(pieces)
    assert sum(1 for segment in result if any(segment is piece for piece in big)) == len(big)
    assert len(result) < len(pieces) / 50
    assert exposition.segments(small) == (b"".join(small),)


def test_gzip_of_pieces_is_the_gzip_of_the_whole() -> None:
    """gzip_pieces compresses the pieces as one stream that decompresses to their concatenation."""
    pieces = [b"# HELP a\n", b"a 1.0\n" * 1000, b"", b"b 2.0\n"]
    head, compressor = exposition.gzip_pieces(pieces)
    assert gzip.decompress(head + exposition.gzip_end(compressor)) == b"".join(pieces)


def test_gzip_end_appends_text_to_the_same_stream_and_can_be_repeated() -> None:
    """One gzip member (not two concatenated), so any client decodes it; the compressor is reusable."""
    head, compressor = exposition.gzip_pieces([b"a 1.0\n" * 100])
    for tail in (b"process_open_fds 7.0\n", b"process_open_fds 8.0\n"):
        body = head + exposition.gzip_end(compressor, tail)
        inflater = zlib.decompressobj(31)
        assert inflater.decompress(body) == b"a 1.0\n" * 100 + tail
        assert (inflater.eof, inflater.unused_data) == (True, b"")


def _samples(body: str, family: str) -> dict[str, str]:
    """The samples of one family: label text to value."""
    prefix = family + "{"
    return {line[len(prefix):line.index("}")]: line.rsplit(" ", 1)[1]
            for line in body.splitlines() if line.startswith(prefix)}


def test_gdap_statuses_are_precreated_and_counted() -> None:
    """Every documented status has a series, at 0 unless relationships are in it."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    by_status = _samples(body, "partnercenter_gdap_relationships")
    expected = {"active": "3.0", "expiring": "1.0", "approvalPending": "1.0", "expired": "1.0",
                "created": "1.0"}
    assert by_status == {f'status="{s}",tenant="contoso"': expected.get(s, "0.0") for s in GDAP_STATUSES}


def test_end_timestamps_only_for_relationships_that_grant_access() -> None:
    """Active relationships get an end timestamp with their labels; pending, expired and expiring
    (past its end date) ones do not, and label values are escaped."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    ends = _samples(body, "partnercenter_gdap_relationship_end_timestamp_seconds")
    assert len(ends) == 3
    b = next(labels for labels in ends if 'customer_tenant_id="id-b"' in labels)
    assert 'auto_extend="false"' in b
    assert 'global_admin="true"' in b
    assert 'relationship_name="b \\"GDAP\\""' in b
    assert float(ends[b]) == NOW + 20 * DAY


def test_expiry_windows_count_only_relationships_without_auto_extend() -> None:
    """Within 7 days: a (5 days); c ends in 3 but auto-extends. Within 30: a and b (20 days). f
    ended a day ago (expiring): an end already past is not "within N days"."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert _samples(body, "partnercenter_gdap_relationships_expiring_without_auto_extend") == {
        'tenant="contoso",within_days="7"': "1.0", 'tenant="contoso",within_days="30"': "2.0"}
    assert _samples(body, "partnercenter_gdap_relationships_with_global_admin") == {
        'tenant="contoso"': "1.0"}
    # a and c: b's only active relationship has no active access assignment.
    assert _samples(body, "partnercenter_gdap_customers") == {'tenant="contoso"': "2.0"}


def test_dap_customers_without_gdap_are_joined_with_the_gdap_data() -> None:
    """DAP customers whose relationships are only pending, expired or expiring, who have none, or
    whose active relationship has no active access assignment (b: pending only) are listed."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert _samples(body, "partnercenter_dap_enabled_customers") == {'tenant="contoso"': "5.0"}
    assert _samples(body, "partnercenter_dap_customers_without_gdap") == {'tenant="contoso"': "4.0"}
    assert _samples(body, "partnercenter_dap_customer_without_gdap_info") == {
        f'customer_name="{c} Ltd",customer_tenant_id="id-{c}",tenant="contoso"': "1.0" for c in "bdef"}


def test_last_partner_sign_in_per_dap_customer_is_zero_when_never() -> None:
    """One last-sign-in series per DAP customer, its Unix time, 0 for "no sign-ins by partners";
    the DAP start and Global Admin sign-ins alongside."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    last = _samples(body, "partnercenter_dap_customer_last_signin_timestamp_seconds")
    who = 'customer_name="{0} Ltd",customer_tenant_id="id-{0}",tenant="contoso"'
    assert float(last[who.format("a")]) == signed_in(10)
    assert last[who.format("d")] == "0.0"
    assert len(last) == 5
    assert len(_samples(body, "partnercenter_dap_customer_start_timestamp_seconds")) == 4
    signins = _samples(body, "partnercenter_dap_customer_global_admin_signins")
    assert (signins[who.format("e")], signins[who.format("a")]) == ("2.0", "0.0")


def test_inactive_dap_customers_are_split_by_gdap_coverage_per_threshold() -> None:
    """Over 90 days: b (an active relationship, but no active access assignment), e and f, and d,
    never signed in with DAP since 2022: none has access. Over 30: the same. a signed in 10 days ago
    and counts for neither."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(30, 90), poll_interval=900).decode()
    assert _samples(body, "partnercenter_dap_customers_inactive") == {
        'gdap="true",tenant="contoso",threshold_days="30"': "0.0",
        'gdap="false",tenant="contoso",threshold_days="30"': "4.0",
        'gdap="true",tenant="contoso",threshold_days="90"': "0.0",
        'gdap="false",tenant="contoso",threshold_days="90"': "4.0"}


def test_a_dap_customer_never_signed_in_counts_as_inactive_once_its_dap_is_older() -> None:
    """No sign-in ever, with DAP established 40 days ago: inactive over 30 days, not over 90; with
    neither a sign-in nor a start date, inactive over every threshold."""
    customers = DapCustomers((DapCustomer("id-y", "y", None, NOW - 40 * DAY),
                              DapCustomer("id-z", "z", None, None)))
    counts = inactive_by_coverage(customers, frozenset(), Context(TODAY, ThresholdBuckets((30, 90), TODAY)))
    assert counts == {30: (0, 2), 90: (0, 1)}


def test_no_join_before_the_gdap_collector_has_data() -> None:
    """Without GDAP data yet, the DAP customer count is shown but no customer is called uncovered."""
    views = tuple(v for v in sample_snapshot().views if v.collector != "gdap_relationships")
    body = render(Snapshot(views), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert _samples(body, "partnercenter_dap_enabled_customers") == {'tenant="contoso"': "5.0"}
    assert "partnercenter_dap_customers_without_gdap{" not in body
    assert "partnercenter_dap_customer_without_gdap_info{" not in body
    assert "partnercenter_dap_customers_inactive{" not in body


def test_each_collector_reports_its_own_poll_health() -> None:
    """Poll success, requests and errors carry the collector label, one set per collector."""
    body = render(sample_snapshot(), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    assert _samples(body, "partnercenter_exporter_api_requests_total") == {
        'code="200",collector="dap_customers",tenant="contoso"': "1.0",
        'code="200",collector="gdap_access_assignments",tenant="contoso"': "3.0",
        'code="200",collector="dap_statistics",tenant="contoso"': "10.0",
        'code="429",collector="dap_statistics",tenant="contoso"': "2.0",
        'code="200",collector="gdap_relationships",tenant="contoso"': "2.0",
        'code="429",collector="gdap_relationships",tenant="contoso"': "1.0",
        'code="200",collector="partner_customers",tenant="contoso"': "1.0",
        'code="410",collector="dap_customers",tenant="fabrikam"': "4.0"}
    success = _samples(body, "partnercenter_exporter_poll_success")
    assert success['collector="gdap_relationships",tenant="contoso"'] == "1.0"
    assert success['collector="dap_statistics",tenant="fabrikam"'] == "0.0"


def test_an_active_relationship_whose_end_has_passed_is_not_expiring_within_days() -> None:
    """Graph may still say active for a moment after endDateTime: that end is not "within 7 days"."""
    gdap = GdapRelationships((relationship("a", ends_in_days=-0.5), relationship("b", ends_in_days=2)),
                             fetched_at=NOW)
    assert gdap.expiring_without_auto_extend(7) == 1


def test_a_reload_after_a_failed_one_records_success_and_its_time() -> None:
    """A failed load sets config_last_reload_successful to 0 and keeps the last success time; the
    next good reload (reconfigure) sets it back to 1 with the time of that reload."""
    now = [1_000.0]
    publisher = Publisher((90,), poll_interval=900, clock=lambda: now[0], loaded=("config",))
    ok, at = ("partnercenter_exporter_config_last_reload_successful",
              "partnercenter_exporter_config_last_reload_success_timestamp_seconds")
    now[0] = 2_000.0
    publisher.loaded("config", False)
    body = publisher.current.body.decode()
    assert _samples(body, ok) == {'config="config"': "0.0"}
    assert _samples(body, at) == {'config="config"': "1000.0"}
    now[0] = 3_000.0
    publisher.reconfigure((30, 90), poll_interval=600)
    body = publisher.current.body.decode()
    assert _samples(body, ok) == {'config="config"': "1.0"}
    assert _samples(body, at) == {'config="config"': "3000.0"}
