"""Sample data shared by test modules: a known snapshot, GDAP and DAP-customer data, fake tokens,
and the shipped alert rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

import yaml

from devtools import build_monitoring
from exporter.collectors.dap_customers import DapCustomer, DapCustomers
from exporter.collectors.dap_statistics import DapStatistics
from exporter.collectors.gdap_access_assignments import AccessAssignment, GdapAccess
from exporter.collectors.gdap_relationships import GdapRelationship, GdapRelationships
from exporter.collectors.partner_customers import PartnerCustomer, PartnerCustomers
from exporter.model import Snapshot, SourceView

TODAY = dt.date(2026, 11, 23)
D = dt.date


def sample_snapshot() -> Snapshot:
    # 22 DAP customers, 18 of them with a sign-in date: 4 have none.
    stats = DapStatistics(
        total_customers=22,
        established={D(2021, 6, 18): 1, D(2022, 2, 18): 3},
        inactive={D(2026, 11, 20): 5, D(2026, 9, 24): 2, D(2026, 8, 24): 4, D(2026, 7, 1): 6,
                  D(2024, 1, 1): 1},
        skipped_entries=1)
    healthy = SourceView(
        name="contoso", collector="dap_statistics", data=stats, attempted=True, last_poll_success=True,
        last_success_time=1795435200.0, last_duration=0.25, errors_total={"throttled": 2},
        api_requests_total={"200": 10, "429": 2}, skipped_entries_total=1,
        token_expires_at=1795438800.0, token_store_pending=False, api_retired=False)
    failing = SourceView(
        name="fabrikam", collector="dap_statistics", attempted=True, last_poll_success=False,
        last_duration=1.5,
        last_error_reason="auth", last_error_message="the refresh token has expired",
        errors_total={"auth": 3}, certificate_expires_at=1796256000.0)
    pending = SourceView("northwind", "dap_statistics")
    # fabrikam's customer list has answered 410 from its first poll on: retired.
    retired = SourceView(
        name="fabrikam", collector="dap_customers", attempted=True, last_poll_success=False,
        last_duration=0.1, last_error_reason="not_found",
        last_error_message="Partner Center answered 410 for delegatedAdminCustomers",
        errors_total={"not_found": 4}, api_requests_total={"410": 4}, api_retired=True)
    gdap = SourceView(
        name="contoso", collector="gdap_relationships", data=sample_gdap(), attempted=True,
        last_poll_success=True, last_success_time=1795435201.0, last_duration=0.5,
        api_requests_total={"200": 2, "429": 1}, token_expires_at=1795438801.0)
    dap_customers = SourceView(
        name="contoso", collector="dap_customers", data=sample_dap_customers(), attempted=True,
        last_poll_success=True, last_success_time=1795435202.0, last_duration=0.125,
        api_requests_total={"200": 1}, api_retired=False)
    access = SourceView(
        name="contoso", collector="gdap_access_assignments", data=sample_access(), attempted=True,
        last_poll_success=True, last_success_time=1795435203.0, last_duration=0.75,
        api_requests_total={"200": 3})
    partner = SourceView(
        name="contoso", collector="partner_customers", data=sample_partner_customers(), attempted=True,
        last_poll_success=True, last_success_time=1795435204.0, last_duration=0.2,
        api_requests_total={"200": 1})
    return Snapshot((failing, dap_customers, healthy, access, partner, gdap, pending, retired))


NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp()
DAY = 86400.0


def relationship(customer: str, *, status: str = "active", ends_in_days: float | None = 100,
                 auto_extend: bool = False, global_admin: bool = False, rid: str = "") -> GdapRelationship:
    return GdapRelationship(
        id=rid or f"rel-{customer}-{status}", display_name=f"{customer} \"GDAP\"",
        customer_id=f"id-{customer}", customer_name=f"{customer} Ltd", status=status,
        end_time=None if ends_in_days is None else NOW + ends_in_days * DAY,
        auto_extend=auto_extend, global_admin=global_admin)


def sample_gdap() -> GdapRelationships:
    """Customers a (active, 5 days left), b (active, 20 days, Global Admin), c (auto-extends
    in 3 days), d (only a pending and an expired relationship), f (expiring: past its end date a
    day ago), and an invitation that names no customer yet."""
    return GdapRelationships((
        relationship("a", ends_in_days=5),
        relationship("b", ends_in_days=20, global_admin=True),
        relationship("c", ends_in_days=3, auto_extend=True),
        dataclasses.replace(relationship("d", status="approvalPending", ends_in_days=None),
                            created_time=NOW - 70 * DAY, modified_time=NOW - 70 * DAY),
        relationship("d", status="expired", ends_in_days=-10),
        relationship("f", status="expiring", ends_in_days=-1),
        dataclasses.replace(relationship("", status="created", ends_in_days=None), customer_id="",
                            customer_name=""),
    ), fetched_at=NOW, skipped_entries=0)


def sample_access() -> GdapAccess:
    """sample_gdap's relationships with their access assignments: a's is active; b's is stuck in
    pending (a deleted one before it), so nobody can administer b; c has an active one and a failed
    one."""
    def assignment(name: str, status: str) -> AccessAssignment:
        return AccessAssignment(f"as-{name}-{status}", status, f"group-{name}", NOW - 2 * DAY)

    return GdapAccess(sample_gdap(), {
        "rel-a-active": (assignment("a", "active"),),
        "rel-b-active": (assignment("b", "deleted"), assignment("b", "pending")),
        "rel-c-active": (assignment("c", "active"), assignment("c", "error"))})


def signed_in(days_ago: float) -> float:
    return NOW - days_ago * DAY


def sample_dap_customers() -> DapCustomers:
    """DAP customers a and b have GDAP; d (pending only), e (none) and f (expiring) do not.
    Last partner sign-in: a 10 days ago, b 100, d never (DAP since 2022), e 95 (with 2 Global
    Admin sign-ins today), f 200."""
    start = dt.datetime(2022, 4, 20, 6, 11, 11, tzinfo=dt.UTC).timestamp()
    return DapCustomers((
        DapCustomer("id-a", "a Ltd", signed_in(10), start),
        DapCustomer("id-b", "b Ltd", signed_in(100), start),
        DapCustomer("id-d", "d Ltd", None, start),
        DapCustomer("id-e", "e Ltd", signed_in(95), start, global_admin_signins=2),
        DapCustomer("id-f", "f Ltd", signed_in(200), None)))


def sample_partner_customers() -> PartnerCustomers:
    """The partner's contracts: the DAP customers, c (GDAP only), and g, which has neither DAP nor
    any relationship."""
    return PartnerCustomers(tuple(PartnerCustomer(f"id-{c}", f"{c} Ltd") for c in "abcdefg"))


class FakeTokens:
    """Hands out numbered tokens and records whether a fresh one was forced."""

    def __init__(self, method: str = "refresh_token") -> None:
        self.method = method
        self.expires_at: float | None = None
        self.store_pending: bool | None = None
        self.certificate_expires_at: float | None = None
        self.calls: list[bool] = []

    def get_token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        return f"token-{len(self.calls)}"

    def wait_idle(self, timeout: float) -> bool:
        return True

    def flush(self, timeout: float) -> None:
        pass


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of the shipped rule files that has `kind` (alert or record)."""
    return [rule for path in build_monitoring.RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


def github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
