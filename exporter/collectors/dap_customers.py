"""The dap_customers collector: Partner Center's delegatedAdminCustomers, each customer with DAP,
its last partner sign-in and when its DAP began.

https://learn.microsoft.com/partner-center/developer/list-delegated-admin-customers
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from exporter.client import (
    MAX_COUNT,
    PAGE_SIZE,
    ApiClient,
    Listing,
    drop_duplicates,
    log_duplicates,
    log_skipped,
    page_items,
    parse_time,
    text_field,
)
from exporter.collectors.kind import Context, Kind
from exporter.families import CACHED, Family, Samples
from exporter.model import PollError, utc_date

NAME = "dap_customers"
PER_CUSTOMER = ("tenant", "customer_tenant_id", "customer_name")
# The list's OData filter for customers with DAP (list-delegated-admin-customers supports $filter).
DAP_ONLY = {"$filter": "dapEnabled eq true"}


@dataclass(frozen=True)
class DapCustomer:
    """One delegatedAdminCustomers entry with dapEnabled."""

    id: str  # the customer's tenant id, lower case
    name: str
    # Unix time of lastSignInDateTime; None when Partner Center says "no sign-ins to customer
    # tenant by partners" (null or empty).
    last_signin: float | None = None
    start_time: float | None = None  # startDateTime: when the DAP relationship was established
    global_admin_signins: int = 0  # globalAdminSignInCount: partner Global Admin sign-ins, last day

    @property
    def activity_day(self) -> dt.date | None:
        """The UTC date inactivity counts from: the last partner sign-in or, when no partner ever
        signed in, the DAP start (nothing has happened through DAP since); None if neither is
        known."""
        since = self.last_signin if self.last_signin is not None else self.start_time
        return None if since is None else utc_date(since)


@dataclass(frozen=True)
class DapCustomers:
    """The customers that delegatedAdminCustomers lists with dapEnabled."""

    customers: tuple[DapCustomer, ...]
    skipped_entries: int = 0


def parse_dap_customer(entry: Any, where: str, skipped: list[str]) -> DapCustomer | None:
    """One delegatedAdminCustomers entry; None (and a note in skipped) if it is not usable or not DAP.

    Fields as "List the delegated admin customers of a partner" documents them:
    https://learn.microsoft.com/partner-center/developer/list-delegated-admin-customers
    """
    if not isinstance(entry, dict):
        skipped.append(f"{where}: not an object")
        return None
    enabled = entry.get("dapEnabled")
    if not isinstance(enabled, bool):
        skipped.append(f"{where}.dapEnabled: missing or not true/false")
        return None
    customer_id = text_field(entry, "customerTenantId", "tenantId", "id")
    if customer_id is None:
        skipped.append(f"{where}.customerTenantId: missing")
        return None
    if not enabled:
        return None
    times: dict[str, float | None] = {}
    for key in ("lastSignInDateTime", "startDateTime"):
        try:
            times[key] = parse_time(entry.get(key))
        except ValueError:
            skipped.append(f"{where}.{key}: not an ISO 8601 time ({str(entry.get(key))[:40]!r})")
            return None
    signins = entry.get("globalAdminSignInCount")
    name = text_field(entry, "organizationDisplayName", "displayName", "companyName") or customer_id
    return DapCustomer(id=customer_id.lower(), name=name, last_signin=times["lastSignInDateTime"],
                       start_time=times["startDateTime"],
                       global_admin_signins=signins if type(signins) is int and 0 <= signins < MAX_COUNT
                       else 0)


class DapCustomersClient(ApiClient[DapCustomers]):
    """delegatedAdminCustomers, asked for the customers with DAP only.

    `$filter=dapEnabled eq true`, as Microsoft's GDAP bulk-migration tool asks: no metric of this
    kind needs a customer without DAP (every customer comes from partner_customers), so a partner
    with thousands of those pays no page for them. Pages by @odata.nextLink when Partner Center
    sends one (the bulk-migration tool follows it); otherwise by $skip, advanced by the entries
    actually received, until an empty page, so a server page smaller than $top loses nothing.
    """

    collector = NAME
    resource = "delegatedAdminCustomers"
    url_setting = "endpoints.dap_customers_url"
    retirable = True

    def fetch(self) -> DapCustomers:
        listing = Listing(self.resource, self._monotonic)
        with listing.paced():
            return self._list(listing)

    def _list(self, listing: Listing) -> DapCustomers:
        listed: list[DapCustomer] = []
        seen: set[str] = set()
        skipped: list[str] = []
        received = 0
        url = self._url
        params: dict[str, str] | None = {**DAP_ONLY, "$top": str(PAGE_SIZE)}
        while True:
            payload = self._get_json(url, params)
            items = page_items(payload, self.resource)
            if not items:
                break
            ids = {str(e.get("customerTenantId") or e.get("id") or "").lower()
                   for e in items if isinstance(e, dict)} - {""}
            if ids and ids <= seen:
                # The same customers again: the server ignores $skip or its link goes round in a
                # circle. Reading on would repeat them until the listing's bounds.
                raise PollError("invalid_response", f"{self.resource} sent customers it had already "
                                                    f"listed after {received} entries (it ignores $skip "
                                                    f"or its nextLink loops); stopped reading")
            seen |= ids
            for entry in items:
                customer = parse_dap_customer(entry, f"value[{received}]", skipped)
                received += 1
                if customer is not None:
                    listed.append(customer)
            listing.check(received)
            link = self._next_link(payload)
            if link is not None:
                url, params = link, None
            elif url == self._url:
                params = {**DAP_ONLY, "$top": str(PAGE_SIZE), "$skip": str(received)}
            else:
                break  # a nextLink chain that ends: the list is complete
        customers, duplicates = drop_duplicates(listed, lambda c: c.id)
        log_duplicates(duplicates, self.resource)
        log_skipped(skipped, self.resource)
        return DapCustomers(tuple(sorted(customers, key=lambda c: (c.name.lower(), c.id))),
                            skipped_entries=len(skipped))


ENABLED = Family(
    "partnercenter_dap_enabled_customers", "gauge",
    f"Customers that delegatedAdminCustomers lists with dapEnabled. {CACHED}", ["tenant"])
LAST_SIGNIN = Family(
    "partnercenter_dap_customer_last_signin_timestamp_seconds", "gauge",
    "Unix time of the last partner sign-in to a customer with DAP (lastSignInDateTime); 0 when "
    f"no partner ever signed in. {CACHED}", PER_CUSTOMER)
START = Family(
    "partnercenter_dap_customer_start_timestamp_seconds", "gauge",
    f"Unix time at which the customer's DAP relationship was established (startDateTime). {CACHED}",
    PER_CUSTOMER)
GLOBAL_ADMIN_SIGNINS = Family(
    "partnercenter_dap_customer_global_admin_signins", "gauge",
    "Partner sign-ins with the Global Administrator role to a customer with DAP in the last "
    f"day (globalAdminSignInCount). {CACHED}", PER_CUSTOMER)


def samples(out: Samples, tenant: str, data: DapCustomers, ctx: Context) -> None:
    out.add(ENABLED, (tenant,), len(data.customers))
    for customer in data.customers:
        who = (tenant, customer.id, customer.name)
        out.add(LAST_SIGNIN, who, customer.last_signin or 0)
        if customer.start_time is not None:
            out.add(START, who, customer.start_time)
        out.add(GLOBAL_ADMIN_SIGNINS, who, customer.global_admin_signins)


KIND: Kind[DapCustomers] = Kind(
    name=NAME,
    build=lambda s: DapCustomersClient(s.tenant, s.http, s.endpoints.dap_customers_url, s.tokens),
    families=(ENABLED, LAST_SIGNIN, START, GLOBAL_ADMIN_SIGNINS), samples=samples,
    figures=lambda data, ctx: f"{len(data.customers)} with DAP",
    summary=lambda data: {"dap_enabled_customers": len(data.customers)},
    requires={"gdap_relationships": "dap_customers finds DAP customers without GDAP by joining "
                                    "with GDAP relationships"})
