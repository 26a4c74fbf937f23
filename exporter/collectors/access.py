"""Each customer's real access: joins GDAP relationships with their access assignments and adds
the DAP customer list and every customer of the partner (its contracts), one tenant at a time.

A customer has access when at least one active relationship that names it has at least one active
access assignment: the assignment is what gives a security group of the partner the roles
(https://learn.microsoft.com/graph/api/resources/delegatedadminaccessassignment). A tenant that
does not run gdap_access_assignments gets the relationship-only meaning (an active relationship is
access), and a gauge (CHECKS_ASSIGNMENTS) says which one applies. With assignments, the
relationships are those that collector read in the same poll as their assignments, so the two are
always of one moment.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.collectors.dap_customers import PER_CUSTOMER, DapCustomers
from exporter.collectors.gdap_access_assignments import GdapAccess
from exporter.collectors.gdap_relationships import GdapRelationship, GdapRelationships
from exporter.collectors.kind import Context, Join
from exporter.collectors.partner_customers import PartnerCustomers
from exporter.families import CACHED, Family, Samples


@dataclass(frozen=True)
class CustomerAccess:
    """One customer as the partner's relationships and DAP list know it."""

    id: str  # the customer's tenant id, lower case
    name: str
    has_access: bool
    end_time: float | None = None  # the latest end among the relationships that give access
    auto_extends: bool = False  # one of those relationships auto-extends


def _relationships(gdap: GdapRelationships, assignments: GdapAccess | None) -> GdapRelationships:
    """The relationships access is judged on: those read with their assignments, where there are."""
    return assignments.relationships if assignments is not None else gdap


def gives_access(gdap: GdapRelationships, assignments: GdapAccess | None) -> list[GdapRelationship]:
    """The relationships that give someone access to their customer today."""
    return [r for r in _relationships(gdap, assignments).with_access()
            if assignments is None or assignments.active_assignments(r.id) > 0]


def customers_with_access(gdap: GdapRelationships, assignments: GdapAccess | None) -> frozenset[str]:
    return frozenset(r.customer_id for r in gives_access(gdap, assignments))


def by_customer(gdap: GdapRelationships, assignments: GdapAccess | None, dap: DapCustomers | None,
                partner: PartnerCustomers | None = None) -> list[CustomerAccess]:
    """Every customer known from a relationship of any status, the DAP list or the partner's
    contracts, with its access. A name comes from the first of those that has the customer: a
    contract's name is a copy from when the partnership began."""
    names: dict[str, str] = {}
    for r in _relationships(gdap, assignments).relationships:
        if r.customer_id:
            names.setdefault(r.customer_id, r.customer_name)
    for customer in dap.customers if dap is not None else ():
        names.setdefault(customer.id, customer.name)
    for contract in partner.customers if partner is not None else ():
        names.setdefault(contract.id, contract.name)
    ends: dict[str, float | None] = {}
    extends: set[str] = set()
    for r in gives_access(gdap, assignments):
        known = ends.get(r.customer_id)
        ends[r.customer_id] = r.end_time if known is None else max(known, r.end_time or known)
        if r.auto_extend:
            extends.add(r.customer_id)
    return [CustomerAccess(cid, name, cid in ends, ends.get(cid), cid in extends)
            for cid, name in sorted(names.items(), key=lambda item: (item[1].lower(), item[0]))]


ACCESS = Family(
    "partnercenter_gdap_customer_access", "gauge",
    "1 when someone at the partner can administer the customer through GDAP: an active relationship "
    "with an active access assignment (with an active relationship only, where the tenant does not run "
    "gdap_access_assignments); 0 otherwise. One series per customer known from a GDAP relationship "
    "of any status, the DAP customer list or, with partner_customers, the partner's contracts: every "
    f"customer. {CACHED}", PER_CUSTOMER)
ACCESS_END = Family(
    "partnercenter_gdap_customer_access_end_timestamp_seconds", "gauge",
    "Unix time at which a customer's GDAP access ends: the latest end among the relationships that "
    f"give access. {CACHED}", PER_CUSTOMER)
ACCESS_AUTO_EXTENDS = Family(
    "partnercenter_gdap_customer_access_auto_extends", "gauge",
    "1 when a relationship that gives access to the customer auto-extends (never one with Global "
    f"Administrator), 0 otherwise. {CACHED}", PER_CUSTOMER)
CUSTOMERS = Family(
    "partnercenter_gdap_customers", "gauge",
    "Distinct customers the partner can administer through GDAP: an active relationship with an "
    "active access assignment (an active relationship only, where the tenant does not run "
    f"gdap_access_assignments). {CACHED}", ["tenant"])
CHECKS_ASSIGNMENTS = Family(
    "partnercenter_gdap_customer_access_checks_assignments", "gauge",
    "1 when customer access counts active access assignments (gdap_access_assignments runs), 0 "
    f"when it counts active relationships only, which overstates access. {CACHED}", ["tenant"])


def samples(out: Samples, tenant: str, gdap: GdapRelationships, assignments: GdapAccess | None,
            dap: DapCustomers | None, partner: PartnerCustomers | None, ctx: Context) -> None:
    customers = by_customer(gdap, assignments, dap, partner)
    for c in customers:
        who = (tenant, c.id, c.name)
        out.add(ACCESS, who, int(c.has_access))
        if c.has_access:
            if c.end_time is not None:
                out.add(ACCESS_END, who, c.end_time)
            out.add(ACCESS_AUTO_EXTENDS, who, int(c.auto_extends))
    out.add(CUSTOMERS, (tenant,), sum(1 for c in customers if c.has_access))
    out.add(CHECKS_ASSIGNMENTS, (tenant,), int(assignments is not None))


def figures(gdap: GdapRelationships, assignments: GdapAccess | None, dap: DapCustomers | None,
            partner: PartnerCustomers | None, ctx: Context) -> str:
    customers = by_customer(gdap, assignments, dap, partner)
    basis = "by access assignment" if assignments is not None else "by relationship only"
    return (f"; {sum(1 for c in customers if not c.has_access)} of {len(customers)} customers "
            f"without access ({basis})")


JOIN = Join(
    name="access", inputs=("gdap_relationships",),
    optional=("gdap_access_assignments", "dap_customers", "partner_customers"),
    families=(ACCESS, ACCESS_END, ACCESS_AUTO_EXTENDS, CUSTOMERS, CHECKS_ASSIGNMENTS), samples=samples,
    figures=figures)
