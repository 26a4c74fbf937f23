"""Each customer's real access (exporter.collectors.access) and what the migration view makes of it:
an active relationship is access only with an active access assignment."""

from __future__ import annotations

import dataclasses

from exporter.collectors import REGISTRY, Context
from exporter.collectors.access import by_customer
from exporter.collectors.dap_customers import DapCustomer, DapCustomers
from exporter.collectors.gdap_access_assignments import AccessAssignment, GdapAccess
from exporter.collectors.gdap_relationships import GLOBAL_ADMIN_ROLE, GdapRelationships, parse_relationship
from exporter.exposition import render
from exporter.model import Snapshot, SourceView, ThresholdBuckets
from tests.helpers.samples import DAY, NOW, TODAY, relationship

CTX = Context(TODAY, ThresholdBuckets((90,), TODAY))


def active(rid: str, status: str = "active") -> AccessAssignment:
    return AccessAssignment(f"as-{rid}-{status}", status, "group", NOW)


def view(collector: str, data: object | None) -> SourceView:
    return SourceView("contoso", collector, data=data, attempted=True,  # type: ignore[arg-type]
                      last_poll_success=data is not None, last_success_time=NOW)


def series(views: list[SourceView], family: str) -> dict[str, str]:
    body = render(Snapshot(tuple(views)), today=TODAY, thresholds=(90,), poll_interval=900).decode()
    prefix = family + "{"
    return {line[len(prefix):line.index("}")]: line.rsplit(" ", 1)[1]
            for line in body.splitlines() if line.startswith(prefix)}


def test_a_dap_customer_whose_active_relationship_has_no_active_assignment_is_without_gdap() -> None:
    """x has DAP and an active relationship whose only assignment is pending: it is a DAP customer
    without GDAP (the alert's series), has access 0, and is not counted in gdap_customers."""
    gdap = GdapRelationships((relationship("x"),), fetched_at=NOW)
    access = GdapAccess(gdap, {"rel-x-active": (active("x", "pending"),)})
    dap = DapCustomers((DapCustomer("id-x", "x Ltd", NOW - DAY, NOW - 400 * DAY),))
    views = [view("gdap_relationships", gdap), view("gdap_access_assignments", access),
             view("dap_customers", dap)]
    who = 'customer_name="x Ltd",customer_tenant_id="id-x",tenant="contoso"'
    assert series(views, "partnercenter_dap_customer_without_gdap_info") == {who: "1.0"}
    assert series(views, "partnercenter_gdap_customer_access") == {who: "0.0"}
    assert series(views, "partnercenter_gdap_customers") == {'tenant="contoso"': "0.0"}
    assert series(views, "partnercenter_gdap_customer_access_checks_assignments") == {
        'tenant="contoso"': "1.0"}


def test_without_the_assignments_collector_an_active_relationship_counts_as_access() -> None:
    """A tenant that does not run gdap_access_assignments keeps the relationship-only meaning, and
    says so (checks_assignments 0)."""
    gdap = GdapRelationships((relationship("x"),), fetched_at=NOW)
    views = [view("gdap_relationships", gdap)]
    assert series(views, "partnercenter_gdap_customer_access") == {
        'customer_name="x Ltd",customer_tenant_id="id-x",tenant="contoso"': "1.0"}
    assert series(views, "partnercenter_gdap_customer_access_checks_assignments") == {
        'tenant="contoso"': "0.0"}


def test_no_access_series_while_the_assignments_collector_has_no_data_yet() -> None:
    """The tenant runs gdap_access_assignments but its first poll has not succeeded: no customer is
    called covered by the relationship-only meaning meanwhile; the access view waits."""
    gdap = GdapRelationships((relationship("x"),), fetched_at=NOW)
    views = [view("gdap_relationships", gdap), view("gdap_access_assignments", None)]
    assert series(views, "partnercenter_gdap_customer_access") == {}
    assert series(views, "partnercenter_gdap_customers") == {}


def test_a_customer_with_two_relationships_shows_the_later_end() -> None:
    """One relationship ends in 3 days, another in 300, both with an active assignment: the
    customer's access ends in 300 days."""
    soon = relationship("x", ends_in_days=3, rid="soon")
    later = relationship("x", ends_in_days=300, rid="later")
    gdap = GdapRelationships((soon, later), fetched_at=NOW)
    access = GdapAccess(gdap, {"soon": (active("soon"),), "later": (active("later"),)})
    [customer] = by_customer(gdap, access, None)
    assert customer.has_access
    assert customer.end_time == NOW + 300 * DAY


def test_a_relationship_without_an_active_assignment_does_not_set_the_end() -> None:
    """The later relationship has only a failed assignment: access ends with the earlier one."""
    soon = relationship("x", ends_in_days=3, rid="soon")
    later = relationship("x", ends_in_days=300, rid="later")
    gdap = GdapRelationships((soon, later), fetched_at=NOW)
    access = GdapAccess(gdap, {"soon": (active("soon"),), "later": (active("later", "error"),)})
    [customer] = by_customer(gdap, access, None)
    assert customer.end_time == NOW + 3 * DAY


def test_global_administrator_with_p180d_does_not_auto_extend() -> None:
    """Graph says autoExtendDuration P180D for a relationship with Global Administrator: it counts
    as not auto-extending, for the relationship and for the customer's access."""
    entry = {"id": "r1", "status": "active", "autoExtendDuration": "P180D",
             "endDateTime": "2027-01-01T00:00:00Z", "customer": {"tenantId": "C1", "displayName": "One"},
             "accessDetails": {"unifiedRoles": [{"roleDefinitionId": GLOBAL_ADMIN_ROLE}]}}
    parsed = parse_relationship(entry, "v", [])
    assert parsed is not None
    assert (parsed.global_admin, parsed.auto_extend) == (True, False)
    gdap = GdapRelationships((parsed,), fetched_at=NOW)
    [customer] = by_customer(gdap, GdapAccess(gdap, {"r1": (active("r1"),)}), None)
    assert (customer.has_access, customer.auto_extends) == (True, False)


def test_every_customer_known_from_any_source_gets_a_series() -> None:
    """Customers from relationships of any status and from the DAP list each get an access series;
    a relationship that names no customer adds none."""
    gdap = GdapRelationships((
        relationship("a"), relationship("b", status="expiring", ends_in_days=-1),
        dataclasses.replace(relationship("", status="created", ends_in_days=None), customer_id="")),
        fetched_at=NOW)
    access = GdapAccess(gdap, {"rel-a-active": (active("a"),)})
    dap = DapCustomers((DapCustomer("id-d", "d Ltd", None, None),))
    assert {(c.id, c.has_access) for c in by_customer(gdap, access, dap)} == {
        ("id-a", True), ("id-b", False), ("id-d", False)}


def test_the_status_page_says_which_meaning_of_access_it_counts() -> None:
    """The gdap_relationships row of the status page counts customers without access and says
    whether by access assignment or by relationship only."""
    gdap = GdapRelationships((relationship("x"), relationship("y")), fetched_at=NOW)
    access = GdapAccess(gdap, {"rel-x-active": (active("x"),), "rel-y-active": ()})
    alone = [view("gdap_relationships", gdap)]
    both = [*alone, view("gdap_access_assignments", access)]
    assert REGISTRY.figures(alone[0], alone, CTX).endswith("; 0 of 2 customers without access "
                                                           "(by relationship only)")
    assert REGISTRY.figures(both[0], both, CTX).endswith("; 1 of 2 customers without access "
                                                         "(by access assignment)")
