"""Realistic, seeded data for one partner tenant: a few hundred DAP customers over three years, and
GDAP relationships that cover most of them, some more, in every stage of their life."""

from __future__ import annotations

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
    last_signin: dt.date
    id: str = ""
    name: str = ""


@dataclass
class Relationship:
    """One GDAP relationship as Graph lists it."""

    id: str
    display_name: str
    customer_id: str
    customer_name: str
    status: str
    end: dt.datetime | None
    auto_extend: bool
    roles: tuple[str, ...] = field(default=COMMON_ROLES[:2])


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
        customers.append(Customer(established, today - dt.timedelta(days=min(since, age)),
                                  id=customer_id(seed, len(customers)), name=customer_name(rng)))
    return customers


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
    """The delegatedAdminStatistics document, shaped like Microsoft's documented example."""
    return {
        "@odata.context": f"{base_url}/CustomerServiceAdminApi/Web/v1/$metadata"
                          "#delegatedAdminStatistics/$entity",
        "id": tenant_id,
        "partnerTenantId": tenant_id,
        "totalDapCustomerCount": len(customers),
        "establishedDapCount": _grouped([c.established for c in customers]),
        "inactiveDapCount": _grouped([c.last_signin for c in customers]),
    }


def relationship(customer_id: str, customer_name: str, *, status: str = "active",
                 ends_in_days: float | None = 365.0, auto_extend: bool = False,
                 global_admin: bool = False, now: dt.datetime | None = None,
                 name: str | None = None) -> Relationship:
    """One relationship, for tests and the generator: ends that many days from now."""
    start = now or dt.datetime.now(dt.UTC)
    end = None if ends_in_days is None else start + dt.timedelta(days=ends_in_days)
    roles = (GLOBAL_ADMIN_ROLE, *COMMON_ROLES[:1]) if global_admin else COMMON_ROLES[:2]
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"gdap/{customer_id}/{name}/{status}/{ends_in_days}"))
    # Graph's relationship ids are two GUIDs joined by a hyphen.
    return Relationship(id=f"{rid}-{uuid.uuid5(uuid.NAMESPACE_URL, rid)}",
                        display_name=name or f"GDAP {customer_name}"[:50], customer_id=customer_id,
                        customer_name=customer_name, status=status, end=end, auto_extend=auto_extend,
                        roles=roles)


def generate_relationships(seed: str, dap: list[Customer], now: dt.datetime) -> tuple[
        list[Relationship], list[Customer]]:
    """GDAP relationships for most DAP customers and some customers without DAP.

    Returns the relationships and the customers that have GDAP only (no DAP), so that
    delegatedAdminCustomers can list them too. About a quarter of the DAP customers have no
    relationship that grants access: some none at all, some only one awaiting approval or expired.
    """
    rng = _rng("gdap/" + seed)
    relationships: list[Relationship] = []
    gdap_only = [Customer(now.date(), now.date(), id=customer_id("gdap-only/" + seed, i),
                          name=customer_name(rng)) for i in range(rng.randint(10, 40))]

    def active(customer: Customer) -> None:
        roll = rng.random()
        ends = (rng.uniform(0.2, 6.5) if roll < 0.05 else rng.uniform(7.5, 29) if roll < 0.15
                else rng.uniform(31, 720))
        global_admin = rng.random() < 0.08
        # Microsoft does not let relationships with Global Administrator auto-extend.
        relationships.append(relationship(
            customer.id, customer.name, ends_in_days=ends, now=now, global_admin=global_admin,
            auto_extend=not global_admin and rng.random() < 0.5,
            status="expiring" if ends < 30 and rng.random() < 0.3 else "active",
            name=f"{customer.name} {'GA' if global_admin else 'support'}"))

    for customer in dap:
        roll = rng.random()
        if roll < 0.74:
            active(customer)
            if rng.random() < 0.1:
                relationships.append(relationship(customer.id, customer.name, status="expired",
                                                  ends_in_days=-rng.uniform(1, 300), now=now,
                                                  name=f"{customer.name} old"))
        elif roll < 0.84:
            relationships.append(relationship(customer.id, customer.name, now=now, ends_in_days=None,
                                              status=rng.choice(("approvalPending", "created")),
                                              name=f"{customer.name} pending"))
        elif roll < 0.9:
            relationships.append(relationship(customer.id, customer.name, status="terminated",
                                              ends_in_days=-rng.uniform(1, 100), now=now,
                                              name=f"{customer.name} ended"))
    for customer in gdap_only:
        active(customer)
    return relationships, gdap_only


def relationship_json(r: Relationship) -> dict[str, Any]:
    """A delegatedAdminRelationship as Graph v1.0 returns it."""
    end = None if r.end is None else r.end.strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    return {
        "@odata.type": "#microsoft.graph.delegatedAdminRelationship",
        "id": r.id, "displayName": r.display_name, "duration": "P730D", "status": r.status,
        "autoExtendDuration": "P180D" if r.auto_extend else "PT0S",
        "createdDateTime": "2024-01-02T10:00:00Z", "lastModifiedDateTime": "2024-01-02T10:00:00Z",
        "activatedDateTime": None if r.status in ("approvalPending", "created") else "2024-01-03T10:00:00Z",
        "endDateTime": end,
        "customer": {"tenantId": r.customer_id, "displayName": r.customer_name},
        "accessDetails": {"unifiedRoles": [{"roleDefinitionId": role} for role in r.roles]},
    }


def dap_customer_json(customer: Customer, dap_enabled: bool) -> dict[str, Any]:
    """An entry of Partner Center's delegatedAdminCustomers list."""
    return {"customerTenantId": customer.id, "organizationDisplayName": customer.name,
            "dapEnabled": dap_enabled,
            "startDateTime": f"{customer.established.isoformat()}T00:00:00Z",
            "lastSignInDateTime": f"{customer.last_signin.isoformat()}T00:00:00Z"}
