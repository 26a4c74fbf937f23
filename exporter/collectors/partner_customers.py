"""The partner_customers collector: Microsoft Graph's contracts, every customer of the partner.

A contract "represents an existing partnership that the partner tenant has with a customer
tenant", so the list holds the customers that have neither DAP nor a GDAP relationship too: the
ones the partner cannot administer at all. `GET /v1.0/contracts` in the partner tenant, with
Directory.Read.All, delegated or application.
https://learn.microsoft.com/graph/api/contract-list
https://learn.microsoft.com/graph/api/resources/contract
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.client import log_skipped, text_field
from exporter.collectors.graph import GraphClient
from exporter.collectors.kind import Context, Kind
from exporter.families import CACHED, Family, Samples

NAME = "partner_customers"
CONTRACTS_PATH = "/v1.0/contracts"
# Directory objects come at most 999 a page (the value partners' scripts and CIPP ask for).
CONTRACTS_PAGE_SIZE = 999


@dataclass(frozen=True)
class PartnerCustomer:
    """One contract: a customer tenant of the partner."""

    id: str  # customerId, lower case
    name: str  # displayName: a copy made when the partnership began, never updated since


@dataclass(frozen=True)
class PartnerCustomers:
    """Every customer the partner tenant has a contract with, one entry per customer tenant."""

    customers: tuple[PartnerCustomer, ...]
    skipped_entries: int = 0


def parse_contract(entry: Any, where: str, skipped: list[str]) -> PartnerCustomer | None:
    """One contract; None (and a note in skipped) without a customerId."""
    if not isinstance(entry, dict):
        skipped.append(f"{where}: not an object")
        return None
    customer_id = text_field(entry, "customerId")
    if customer_id is None:
        skipped.append(f"{where}.customerId: missing")
        return None
    name = text_field(entry, "displayName") or text_field(entry, "defaultDomainName") or customer_id
    return PartnerCustomer(id=customer_id.lower(), name=name)


class PartnerCustomersClient(GraphClient[PartnerCustomers]):
    """Microsoft Graph contracts, following @odata.nextLink."""

    collector = NAME
    resource = "contracts"
    path = CONTRACTS_PATH
    permission = "Directory.Read.All"

    def fetch(self) -> PartnerCustomers:
        customers: dict[str, PartnerCustomer] = {}
        skipped: list[str] = []
        for i, entry in enumerate(self._pages({"$top": str(CONTRACTS_PAGE_SIZE)})):
            customer = parse_contract(entry, f"value[{i}]", skipped)
            if customer is not None:
                # A customer may hold more than one kind of contract with the same partner.
                customers.setdefault(customer.id, customer)
        log_skipped(skipped, self.resource)
        return PartnerCustomers(tuple(sorted(customers.values(), key=lambda c: (c.name.lower(), c.id))),
                                skipped_entries=len(skipped))


CUSTOMERS = Family(
    "partnercenter_customers", "gauge",
    "Customers of the partner: the customer tenants Microsoft Graph lists contracts with in the "
    f"partner tenant. {CACHED}", ["tenant"])


def samples(out: Samples, tenant: str, data: PartnerCustomers, ctx: Context) -> None:
    out.add(CUSTOMERS, (tenant,), len(data.customers))


KIND: Kind[PartnerCustomers] = Kind(
    name=NAME,
    build=lambda s: PartnerCustomersClient(s.tenant, s.http, s.endpoints.graph_url, s.graph_tokens),
    families=(CUSTOMERS,), samples=samples, figures=lambda data, ctx: f"{len(data.customers)} customers",
    summary=lambda data: {"partner_customers": len(data.customers)},
    uses_graph=True,
    requires={"gdap_relationships": "partner_customers adds every customer to the per-customer access "
                                    "view, which GDAP relationships decide"})
