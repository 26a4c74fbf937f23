"""The DAP-to-GDAP migration view: DAP customers joined with GDAP coverage, one tenant at a time.

Its inputs are the dap_customers and gdap_relationships kinds' data, and gdap_access_assignments'
where the tenant runs it; nothing is written until each has succeeded once. A customer is covered
when someone at the partner has GDAP access to it (exporter.collectors.access): with access
assignments, an active relationship with an active assignment; without, an active relationship.
"""

from __future__ import annotations

from exporter.collectors.access import customers_with_access
from exporter.collectors.dap_customers import PER_CUSTOMER, DapCustomer, DapCustomers
from exporter.collectors.gdap_access_assignments import GdapAccess
from exporter.collectors.gdap_relationships import GdapRelationships
from exporter.collectors.kind import Context, Join
from exporter.families import CACHED, Family, Samples


def without_gdap(dap: DapCustomers, covered: frozenset[str]) -> list[DapCustomer]:
    """DAP customers nobody at the partner can administer through GDAP (not in `covered`, the
    customers with access): removing DAP cuts them off."""
    return [c for c in dap.customers if c.id not in covered]


def inactive_by_coverage(dap: DapCustomers, covered: frozenset[str],
                         ctx: Context) -> dict[int, tuple[int, int]]:
    """Per threshold, DAP customers inactive over it: (with GDAP access, without).

    One pass: each customer's largest threshold passed comes from the context's buckets, as for
    the statistics' dates; a customer of unknown age is past every threshold.
    """
    top = max(ctx.thresholds, default=0)
    per_bucket: dict[bool, dict[int, int]] = {True: {}, False: {}}
    for customer in dap.customers:
        day = customer.activity_day
        bucket = top if day is None else ctx.buckets(day)
        counts = per_bucket[customer.id in covered]
        counts[bucket] = counts.get(bucket, 0) + 1
    with_gdap, without = (ctx.buckets.totals(per_bucket[flag]) for flag in (True, False))
    return {t: (with_gdap[t], without[t]) for t in ctx.thresholds}


WITHOUT_GDAP = Family(
    "partnercenter_dap_customers_without_gdap", "gauge",
    "Customers with DAP that nobody at the partner can administer through GDAP (no active "
    "relationship with an active access assignment; without gdap_access_assignments, no active "
    f"relationship): removing DAP cuts the partner off from them. {CACHED}", ["tenant"])
WITHOUT_GDAP_INFO = Family(
    "partnercenter_dap_customer_without_gdap_info", "gauge",
    "1 for each customer with DAP that nobody at the partner can administer through GDAP. "
    f"{CACHED}", PER_CUSTOMER)
INACTIVE = Family(
    "partnercenter_dap_customers_inactive", "gauge",
    "Customers with DAP and no partner sign-in for more than threshold_days days before the "
    "current UTC date (or never, with DAP older than that), by whether the partner has GDAP "
    f"access to them (gdap). {CACHED}", ["tenant", "threshold_days", "gdap"])


def samples(out: Samples, tenant: str, dap: DapCustomers, gdap: GdapRelationships,
            assignments: GdapAccess | None, ctx: Context) -> None:
    covered = customers_with_access(gdap, assignments)
    missing = without_gdap(dap, covered)
    out.add(WITHOUT_GDAP, (tenant,), len(missing))
    for customer in missing:
        out.add(WITHOUT_GDAP_INFO, (tenant, customer.id, customer.name), 1)
    for threshold, (with_gdap, without) in inactive_by_coverage(dap, covered, ctx).items():
        out.add(INACTIVE, (tenant, str(threshold), "true"), with_gdap)
        out.add(INACTIVE, (tenant, str(threshold), "false"), without)


JOIN = Join(
    name="migration", inputs=("dap_customers", "gdap_relationships"), optional=("gdap_access_assignments",),
    families=(WITHOUT_GDAP, WITHOUT_GDAP_INFO, INACTIVE), samples=samples,
    figures=lambda dap, gdap, assignments, ctx: (
        f", {len(without_gdap(dap, customers_with_access(gdap, assignments)))} of them without GDAP"))
