"""Realistic, seeded data for one partner tenant: a few hundred DAP customers over three years, and
GDAP relationships that cover most of them, some more, in every stage of their life."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

GLOBAL_ADMIN_ROLE = "62e90394-69f5-4237-9190-012177145e10"
# Least-privilege roles partners commonly ask for (Helpdesk, User, License, Security Reader...).
COMMON_ROLES = ("729827e3-9c14-49f7-bb1b-9608f156bbb8", "fe930be7-5e62-47db-91af-98c3a49a38b1",
                "4d6ac14f-3453-41d0-bef9-a3e0c569773a", "5d6b6bb7-de71-4623-b4af-96380a352509")
_NAMES_A = ("Alpine", "Blue", "Cedar", "Delta", "Evergreen", "Falcon", "Granite", "Harbor", "Ivy",
            "Juniper", "Kestrel", "Lakeside", "Maple", "Northern", "Oak", "Pioneer", "Quarry", "River",
            "Summit", "Tidewater", "Union", "Valley", "Westfield", "Yellowstone", "Zenith")
_NAMES_B = ("Bakery", "Builders", "Clinic", "Consulting", "Dental", "Engineering", "Farms", "Foods",
            "Freight", "Insurance", "Law", "Logistics", "Media", "Motors", "Outfitters", "Pharmacy",
            "Realty", "Robotics", "Solar", "Textiles", "Travel", "Veterinary", "Winery")
_NAMES_C = ("Ltd", "Inc", "GmbH", "BV", "LLC", "SA", "AB", "Oy")


def customer_name(rng: random.Random) -> str:
    return f"{rng.choice(_NAMES_A)} {rng.choice(_NAMES_B)} {rng.choice(_NAMES_C)}"


def customer_id(seed: str, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"customer/{seed}/{index}"))


@dataclass(frozen=True)
class Customer:
    established: dt.date
    last_signin: dt.date | None  # None: no partner ever signed in
    id: str = ""
    name: str = ""
    global_admin_signins: int = 0  # in the last day
    partner_signins: int = 0  # in the last day

    @property
    def dap_start_at(self) -> dt.datetime:
        """startDateTime as delegatedAdminCustomers gives it: on the established date."""
        return dt.datetime.combine(self.established, dt.time(21, 15, 4, 346150), dt.UTC)

    @property
    def last_signin_at(self) -> dt.datetime | None:
        """The moment of the last sign-in on last_signin, as delegatedAdminCustomers gives it."""
        if self.last_signin is None:
            return None
        # A time of day per customer, with Partner Center's seven fractional digits.
        seconds = int(hashlib.sha256(self.id.encode()).hexdigest()[:6], 16) % 86400
        return (dt.datetime.combine(self.last_signin, dt.time(0), dt.UTC)
                + dt.timedelta(seconds=seconds, microseconds=722795))


@dataclass
class Relationship:
    """One GDAP relationship as Graph lists it."""

    id: str
    display_name: str
    customer_id: str  # "" with customer "missing" or "null"
    customer_name: str
    status: str
    end: dt.datetime | None
    auto_extend: bool
    roles: tuple[str, ...] = field(default=COMMON_ROLES[:2])
    # How Graph shows the customer: an object, no `customer` key, or `"customer": null`; the
    # latter two only before the customer approves.
    customer_field: str = "object"
    # An indirect provider's tenant id: a resellerDelegatedAdminRelationship.
    indirect_provider: str | None = None

    @property
    def grants_access(self) -> bool:
        """What the exporter must count as covering a customer: active, with a customer."""
        return self.status == "active" and bool(self.customer_id)


def _rng(seed: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))


def generate_customers(seed: str, today: dt.date, count: int | None = None) -> list[Customer]:
    """Customers with DAP: established over ~3 years, most signed in lately, some long ago."""
    rng = _rng(seed)
    total = count if count is not None else rng.randint(150, 400)
    customers: list[Customer] = []
    for _ in range(total):
        established = today - dt.timedelta(days=rng.randint(30, 3 * 365))
        age = (today - established).days
        roll = rng.random()
        if roll < 0.55:
            since = rng.randint(0, 30)
        elif roll < 0.75:
            since = rng.randint(31, 90)
        else:
            since = rng.randint(91, 2 * 365)
        last: dt.date | None = today - dt.timedelta(days=min(since, age))
        # Some customers no partner ever signed in to: lastSignInDateTime is null.
        if rng.random() < 0.06:
            last = None
        recent = last is not None and since <= 1
        signins = rng.randint(1, 12) if recent else 0
        global_admin = rng.randint(1, signins) if signins and rng.random() < 0.3 else 0
        customers.append(Customer(established, last, id=customer_id(seed, len(customers)),
                                  name=customer_name(rng), global_admin_signins=global_admin,
                                  partner_signins=signins))
    return customers


# Names a careless or hostile upstream can send, all valid JSON: a lone surrogate (which no UTF-8
# encoder accepts), quotes and a backslash, a line break, markup, and plain non-ASCII. The demo
# carries them, so it exercises the exporter's cleaning and escaping on every run.
HOSTILE_NAMES = ("Broken \ud800 Surrogate BV", 'Quote " Backslash \\ Ltd', "Line\nBreak Inc",
                 "<script>alert(1)</script> LLC", "Zoë & 中文 — Oy")


def with_hostile_names(customers: list[Customer],
                       relationships: list[Relationship]) -> list[Customer]:
    """The first customers renamed to HOSTILE_NAMES, in their relationships too."""
    renamed = {c.id: name for c, name in zip(customers, HOSTILE_NAMES, strict=False)}
    for r in relationships:
        if r.customer_id in renamed:
            r.customer_name = renamed[r.customer_id]
            r.display_name = f"{renamed[r.customer_id]} GDAP"[:50]
    return [dataclasses.replace(c, name=renamed.get(c.id, c.name)) for c in customers]


def spread_customers(dates: int, today: dt.date) -> list[Customer]:
    """One customer a day: `dates` distinct establishment dates and as many sign-in dates."""
    return [Customer(established=today - dt.timedelta(days=30 + i), last_signin=today - dt.timedelta(days=i),
                     id=customer_id("spread", i), name=f"Customer {i}") for i in range(dates)]


def _us_date(day: dt.date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def _grouped(days: list[dt.date]) -> list[dict[str, Any]]:
    counts: dict[dt.date, int] = {}
    for day in days:
        counts[day] = counts.get(day, 0) + 1
    return [{"date": _us_date(day), "count": n} for day, n in sorted(counts.items())]


def statistics_payload(tenant_id: str, customers: list[Customer], base_url: str) -> dict[str, Any]:
    """The delegatedAdminStatistics document, shaped like Microsoft's documented example.

    Where no partner ever signed in, the customer counts as inactive since DAP was established:
    the statistics page documents no null date (an assumption; the counts agree with the list).
    """
    return {
        "@odata.context": f"{base_url}/CustomerServiceAdminApi/Web/v1/$metadata"
                          "#delegatedAdminStatistics/$entity",
        "id": tenant_id,
        "partnerTenantId": tenant_id,
        "totalDapCustomerCount": len(customers),
        "establishedDapCount": _grouped([c.established for c in customers]),
        "inactiveDapCount": _grouped([c.last_signin or c.established for c in customers]),
    }


def relationship(customer_id: str, customer_name: str, *, status: str = "active",
                 ends_in_days: float | None = 365.0, auto_extend: bool = False,
                 global_admin: bool = False, now: dt.datetime | None = None,
                 name: str | None = None, customer_field: str = "object",
                 indirect_provider: str | None = None) -> Relationship:
    """One relationship, for tests and the generator: ends that many days from now."""
    start = now or dt.datetime.now(dt.UTC)
    end = None if ends_in_days is None else start + dt.timedelta(days=ends_in_days)
    roles = (GLOBAL_ADMIN_ROLE, *COMMON_ROLES[:1]) if global_admin else COMMON_ROLES[:2]
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"gdap/{customer_id}/{name}/{status}/{ends_in_days}"))
    hidden = customer_field != "object"
    # Graph's relationship ids are two GUIDs joined by a hyphen.
    return Relationship(id=f"{rid}-{uuid.uuid5(uuid.NAMESPACE_URL, rid)}",
                        display_name=name or f"GDAP {customer_name}"[:50],
                        customer_id="" if hidden else customer_id,
                        customer_name="" if hidden else customer_name, status=status, end=end,
                        auto_extend=auto_extend, roles=roles, customer_field=customer_field,
                        indirect_provider=indirect_provider)


def generate_relationships(seed: str, dap: list[Customer], now: dt.datetime) -> tuple[
        list[Relationship], list[Customer]]:
    """GDAP relationships for most DAP customers and some customers without DAP.

    Returns the relationships and the customers that have GDAP only (no DAP), so that
    delegatedAdminCustomers can list them too. About a quarter of the DAP customers have no
    relationship that grants access: some none at all, some only one awaiting approval (often with
    no customer named yet), expiring (past its end date), expired or terminated. Some of the active
    relationships are reseller relationships, which Graph lists in the same collection.
    """
    rng = _rng("gdap/" + seed)
    relationships: list[Relationship] = []
    gdap_only = [Customer(now.date(), now.date(), id=customer_id("gdap-only/" + seed, i),
                          name=customer_name(rng)) for i in range(rng.randint(10, 40))]
    provider = str(uuid.uuid5(uuid.NAMESPACE_URL, "indirect-provider/" + seed))

    def active(customer: Customer) -> None:
        roll = rng.random()
        ends = (rng.uniform(0.2, 6.5) if roll < 0.05 else rng.uniform(7.5, 29) if roll < 0.15
                else rng.uniform(31, 720))
        global_admin = rng.random() < 0.08
        # Microsoft does not let relationships with Global Administrator auto-extend.
        relationships.append(relationship(
            customer.id, customer.name, ends_in_days=ends, now=now, global_admin=global_admin,
            auto_extend=not global_admin and rng.random() < 0.5,
            name=f"{customer.name} {'GA' if global_admin else 'support'}",
            indirect_provider=provider if rng.random() < 0.06 else None))

    for customer in dap:
        roll = rng.random()
        if roll < 0.74:
            active(customer)
            if rng.random() < 0.1:
                relationships.append(relationship(customer.id, customer.name, status="expired",
                                                  ends_in_days=-rng.uniform(1, 300), now=now,
                                                  name=f"{customer.name} old"))
        elif roll < 0.84:
            # Before the customer approves, Graph may name no customer: no key, or null.
            status = rng.choice(("approvalPending", "created"))
            relationships.append(relationship(
                customer.id, customer.name, now=now, ends_in_days=None, status=status,
                name=f"{customer.name} pending",
                customer_field=rng.choice(("object", "missing", "null"))))
        elif roll < 0.87:
            # `expiring`: "the relationship has passed its expiration date" and is being removed.
            # (now is noon today: over half a day back is in the past all day long.)
            relationships.append(relationship(customer.id, customer.name, status="expiring",
                                              ends_in_days=-rng.uniform(0.6, 2.5), now=now,
                                              name=f"{customer.name} lapsing"))
        elif roll < 0.9:
            relationships.append(relationship(customer.id, customer.name, status="terminated",
                                              ends_in_days=-rng.uniform(1, 100), now=now,
                                              name=f"{customer.name} ended"))
    for customer in gdap_only:
        active(customer)
    return relationships, gdap_only


def _graph_time(moment: dt.datetime) -> str:
    # Graph writes seven fractional digits: 2022-04-20T06:11:11.7227953Z.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def relationship_json(r: Relationship) -> dict[str, Any]:
    """A delegatedAdminRelationship as Graph v1.0 returns it.

    https://learn.microsoft.com/graph/api/resources/delegatedadminrelationship and, for reseller
    relationships, .../resellerdelegatedadminrelationship.
    """
    body: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.delegatedAdminRelationship",
        "id": r.id, "displayName": r.display_name, "duration": "P730D", "status": r.status,
        "autoExtendDuration": "P180D" if r.auto_extend else "PT0S",
        "createdDateTime": "2024-01-02T10:00:00Z", "lastModifiedDateTime": "2024-01-02T10:00:00Z",
        "activatedDateTime": None if r.status in ("approvalPending", "created") else "2024-01-03T10:00:00Z",
        "endDateTime": None if r.end is None else _graph_time(r.end),
        "customer": {"tenantId": r.customer_id, "displayName": r.customer_name},
        "accessDetails": {"unifiedRoles": [{"roleDefinitionId": role} for role in r.roles]},
    }
    if r.customer_field == "missing":
        del body["customer"]
    elif r.customer_field == "null":
        body["customer"] = None
    if r.indirect_provider is not None:
        body["@odata.type"] = "#microsoft.graph.resellerDelegatedAdminRelationship"
        body["indirectProviderTenantId"] = r.indirect_provider
        body["isPartnerConsentPending"] = False
    return body


def dap_customer_json(customer: Customer, dap_enabled: bool) -> dict[str, Any]:
    """An entry of Partner Center's delegatedAdminCustomers list, every documented field.

    https://learn.microsoft.com/partner-center/developer/list-delegated-admin-customers
    """
    last = customer.last_signin_at
    return {"id": customer.id, "customerTenantId": customer.id,
            "organizationDisplayName": customer.name,
            "partnerAgentCount": min(customer.partner_signins, 3),
            "partnerSignInCount": customer.partner_signins,
            "globalAdminSignInCount": customer.global_admin_signins,
            "dapEnabled": dap_enabled,
            "startDateTime": _graph_time(customer.dap_start_at),
            "endDateTime": None,
            "lastSignInDateTime": None if last is None else _graph_time(last)}
