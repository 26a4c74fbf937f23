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


# The longest relationship Graph allows: two years.
MAX_DURATION_DAYS = 730


@dataclass
class Assignment:
    """One access assignment: a security group of the partner gets the relationship's roles."""

    id: str
    status: str
    group: str  # accessContainerId, a security group in the partner tenant
    created: dt.datetime
    modified: dt.datetime


@dataclass
class Relationship:
    """One GDAP relationship as Graph lists it, with its access assignments."""

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
    # Lifecycle: endDateTime = activatedDateTime + duration; created before activated.
    created: dt.datetime = dt.datetime(2024, 1, 2, 10, tzinfo=dt.UTC)
    modified: dt.datetime = dt.datetime(2024, 1, 2, 10, tzinfo=dt.UTC)
    activated: dt.datetime | None = None
    duration_days: int = MAX_DURATION_DAYS
    assignments: list[Assignment] = field(default_factory=list)

    @property
    def grants_access(self) -> bool:
        """Active, with a customer: what a relationship-only view counts as covering a customer."""
        return self.status == "active" and bool(self.customer_id)

    @property
    def gives_access(self) -> bool:
        """What the exporter must count as access: active, and an active access assignment."""
        return self.grants_access and any(a.status == "active" for a in self.assignments)

    @property
    def really_auto_extends(self) -> bool:
        """Microsoft never auto-extends a relationship with Global Administrator, whatever
        autoExtendDuration says."""
        return self.auto_extend and GLOBAL_ADMIN_ROLE not in self.roles


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
# encoder accepts), quotes and a backslash, a line break, markup, and plain non-ASCII. The
# simulator's hostile scenario (`python -m exporter.simulator --hostile`) carries them; the demo a
# person opens does not.
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


def statistics_payload(tenant_id: str, customers: list[Customer], base_url: str, *,
                       date_never_signed_in: bool = False) -> dict[str, Any]:
    """The delegatedAdminStatistics document, shaped like Microsoft's documented example.

    `inactiveDapCount` is "the count of customers who have had sign-ins with the last date of
    sign-in" (get-delegated-admin-relation-statistics), and the DAP FAQ's "days inactive" may be
    blank: a customer no partner ever signed in to is in none of its dates, so the total exceeds
    their sum. date_never_signed_in=True is the other reading: such a customer is dated at its DAP
    start, and the counts add up.
    """
    dated = [c.last_signin or c.established for c in customers
             if c.last_signin is not None or date_never_signed_in]
    return {
        "@odata.context": f"{base_url}/CustomerServiceAdminApi/Web/v1/$metadata"
                          "#delegatedAdminStatistics/$entity",
        "id": tenant_id,
        "partnerTenantId": tenant_id,
        "totalDapCustomerCount": len(customers),
        "establishedDapCount": _grouped([c.established for c in customers]),
        "inactiveDapCount": _grouped(dated),
    }


def generate_customers_without_delegation(seed: str, today: dt.date, count: int | None = None,
                                          ) -> list[Customer]:
    """Customers with neither DAP nor a GDAP relationship: a partner resells to them but cannot
    administer them. Only the partner's contracts list them."""
    rng = _rng("unmanaged/" + seed)
    return [Customer(today - dt.timedelta(days=rng.randint(30, 900)), None,
                     id=customer_id("unmanaged/" + seed, i), name=customer_name(rng))
            for i in range(count if count is not None else rng.randint(3, 12))]


# contractType values (Graph v1.0 contract resource); resellers hold most.
CONTRACT_TYPES = ("ResellerPartner", "SyndicationPartner", "BreadthPartner")


def contract_json(customer: Customer) -> dict[str, Any]:
    """A contract as Graph v1.0 lists it: the partnership with one customer tenant.

    https://learn.microsoft.com/graph/api/resources/contract
    """
    digest = hashlib.sha256(customer.id.encode()).digest()
    kind = CONTRACT_TYPES[0] if digest[0] < 230 else CONTRACT_TYPES[1 + digest[1] % 2]
    domain = "".join(ch for ch in customer.name.lower() if ch.isascii() and ch.isalnum())[:20] or "customer"
    return {"id": _uuid("contract", customer.id), "deletedDateTime": None, "contractType": kind,
            "customerId": customer.id, "defaultDomainName": f"{domain}{digest[2]}.onmicrosoft.com",
            "displayName": customer.name}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def assignment(relationship_id: str, index: int, status: str, group: str, *,
               created: dt.datetime, modified: dt.datetime | None = None) -> Assignment:
    return Assignment(id=_uuid("assignment", relationship_id, str(index)), status=status, group=group,
                      created=created, modified=modified or created)


def relationship(customer_id: str, customer_name: str, *, status: str = "active",
                 ends_in_days: float | None = 365.0, auto_extend: bool = False,
                 global_admin: bool = False, now: dt.datetime | None = None,
                 name: str | None = None, customer_field: str = "object",
                 indirect_provider: str | None = None, age_days: float = 3.0,
                 assignments: tuple[str, ...] | None = None,
                 group: str = "00000000-0000-0000-0000-00000000a9e1") -> Relationship:
    """One relationship, for tests and the generator: ends that many days from now.

    Its lifecycle agrees with itself as Graph's is: activated `duration` before the end, created
    a few days before that (or, not active yet, age_days ago). assignments: the statuses of its
    access assignments, by default one active one if the relationship is active, none otherwise.
    """
    start = now or dt.datetime.now(dt.UTC)
    end = None if ends_in_days is None else start + dt.timedelta(days=ends_in_days)
    roles = (GLOBAL_ADMIN_ROLE, *COMMON_ROLES[:1]) if global_admin else COMMON_ROLES[:2]
    rid = _uuid("gdap", customer_id, str(name), status, str(ends_in_days))
    hidden = customer_field != "object"
    duration = MAX_DURATION_DAYS
    if end is None:
        # Not active yet: no activatedDateTime and no endDateTime.
        activated, created = None, start - dt.timedelta(days=age_days)
        modified = created if status in ("created", "approvalPending") else start - dt.timedelta(hours=2)
    else:
        activated = end - dt.timedelta(days=duration)
        created = activated - dt.timedelta(days=age_days)
        modified = activated if status == "active" else min(start, end) - dt.timedelta(hours=1)
    statuses = assignments if assignments is not None else (("active",) if status == "active" else ())
    granted = (activated or created) + dt.timedelta(hours=1)
    # An assignment that is not active last changed two days ago: stuck, or failed.
    stalled = start - dt.timedelta(days=2)
    # Graph's relationship ids are two GUIDs joined by a hyphen.
    full_id = f"{rid}-{uuid.uuid5(uuid.NAMESPACE_URL, rid)}"
    return Relationship(id=full_id,
                        display_name=name or f"GDAP {customer_name}"[:50],
                        customer_id="" if hidden else customer_id,
                        customer_name="" if hidden else customer_name, status=status, end=end,
                        auto_extend=auto_extend, roles=roles, customer_field=customer_field,
                        indirect_provider=indirect_provider, created=created, modified=modified,
                        activated=activated, duration_days=duration,
                        assignments=[assignment(full_id, i, a, group, created=granted,
                                                modified=granted if a == "active" else stalled)
                                     for i, a in enumerate(statuses)])


def generate_relationships(seed: str, dap: list[Customer], now: dt.datetime) -> tuple[
        list[Relationship], list[Customer]]:
    """GDAP relationships for most DAP customers and some customers without DAP.

    Returns the relationships and the customers that have GDAP only (no DAP), so that
    delegatedAdminCustomers can list them too. About a quarter of the DAP customers have no
    relationship that grants access: some none at all, some only one awaiting approval (often with
    no customer named yet) or being set up, expiring (past its end date), expired, terminated or on
    its way there. Some active relationships give nobody access: no access assignment was made, or
    it is stuck in pending or failed (error), as Microsoft's GDAP tools and CIPP see at partners.
    Some customers have two active relationships, one ending soon; some relationships with Global
    Administrator say P180D, which Microsoft does not honour. Some active relationships are reseller
    relationships, which Graph lists in the same collection.
    """
    rng = _rng("gdap/" + seed)
    relationships: list[Relationship] = []
    gdap_only = [Customer(now.date(), now.date(), id=customer_id("gdap-only/" + seed, i),
                          name=customer_name(rng)) for i in range(rng.randint(10, 40))]
    provider = _uuid("indirect-provider", seed)
    # The partner's security groups that access assignments name (Helpdesk, Admins, ...).
    groups = [_uuid("group", seed, str(i)) for i in range(3)]

    def assignments() -> tuple[str, ...]:
        roll = rng.random()
        if roll < 0.05:
            return ()  # the partner never made one: nobody has access
        if roll < 0.09:
            return ("pending",)
        if roll < 0.13:
            return ("error",)
        if roll < 0.16:
            return ("deleted", "active")
        if roll < 0.19:
            return ("active", "error")
        return ("active", "active") if roll < 0.35 else ("active",)

    def active(customer: Customer, *, ends: float | None = None, label: str = "support") -> None:
        roll = rng.random()
        if ends is None:
            ends = (rng.uniform(0.2, 6.5) if roll < 0.05 else rng.uniform(7.5, 29) if roll < 0.15
                    else rng.uniform(31, 720))
        global_admin = rng.random() < 0.08
        # Microsoft does not let relationships with Global Administrator auto-extend, but Graph can
        # still say P180D for one (CIPP reports it): the exporter must not believe it.
        relationships.append(relationship(
            customer.id, customer.name, ends_in_days=ends, now=now, global_admin=global_admin,
            auto_extend=rng.random() < (0.3 if global_admin else 0.5),
            name=f"{customer.name} {'GA' if global_admin else label}", age_days=rng.uniform(1, 14),
            indirect_provider=provider if rng.random() < 0.06 else None,
            assignments=assignments(), group=rng.choice(groups)))

    for customer in dap:
        roll = rng.random()
        if roll < 0.74:
            active(customer)
            if rng.random() < 0.08:
                # A replacement: one relationship ends soon, the other much later.
                active(customer, ends=rng.uniform(200, 700), label="renewed")
            if rng.random() < 0.1:
                relationships.append(relationship(customer.id, customer.name, status="expired",
                                                  ends_in_days=-rng.uniform(1, 300), now=now,
                                                  name=f"{customer.name} old"))
        elif roll < 0.84:
            # Before the customer approves, Graph may name no customer: no key, or null. Microsoft
            # cleans up requests left in approvalPending after 90 days.
            status = rng.choice(("approvalPending", "created"))
            relationships.append(relationship(
                customer.id, customer.name, now=now, ends_in_days=None, status=status,
                name=f"{customer.name} pending", age_days=rng.uniform(1, 89),
                customer_field=rng.choice(("object", "missing", "null"))))
        elif roll < 0.86:
            # Approved by the customer; Microsoft is setting it up.
            relationships.append(relationship(
                customer.id, customer.name, now=now, ends_in_days=None,
                status=rng.choice(("approved", "activating")), name=f"{customer.name} new",
                age_days=rng.uniform(0.5, 3)))
        elif roll < 0.89:
            # `expiring`: "the relationship has passed its expiration date" and is being removed.
            # (now is noon today: over half a day back is in the past all day long.)
            relationships.append(relationship(customer.id, customer.name, status="expiring",
                                              ends_in_days=-rng.uniform(0.6, 2.5), now=now,
                                              name=f"{customer.name} lapsing"))
        elif roll < 0.91:
            relationships.append(relationship(
                customer.id, customer.name, now=now, ends_in_days=rng.uniform(30, 300),
                status=rng.choice(("terminationRequested", "terminating")),
                name=f"{customer.name} ending"))
        elif roll < 0.93:
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
        "id": r.id, "displayName": r.display_name, "duration": f"P{r.duration_days}D", "status": r.status,
        "autoExtendDuration": "P180D" if r.auto_extend else "PT0S",
        "createdDateTime": _graph_time(r.created), "lastModifiedDateTime": _graph_time(r.modified),
        "activatedDateTime": None if r.activated is None else _graph_time(r.activated),
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
        # The indirect provider's consent is pending until the customer has approved.
        body["isPartnerConsentPending"] = r.status in ("created", "approvalPending")
    return body


def assignment_json(r: Relationship, a: Assignment) -> dict[str, Any]:
    """A delegatedAdminAccessAssignment as Graph v1.0 returns it.

    https://learn.microsoft.com/graph/api/resources/delegatedadminaccessassignment
    """
    return {"@odata.type": "#microsoft.graph.delegatedAdminAccessAssignment", "id": a.id,
            "status": a.status, "createdDateTime": _graph_time(a.created),
            "lastModifiedDateTime": _graph_time(a.modified),
            "accessContainer": {"accessContainerId": a.group, "accessContainerType": "securityGroup"},
            "accessDetails": {"unifiedRoles": [{"roleDefinitionId": role} for role in r.roles]}}


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
