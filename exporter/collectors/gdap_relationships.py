"""The gdap_relationships collector: Microsoft Graph's delegatedAdminRelationships, every GDAP
relationship of the partner.

https://learn.microsoft.com/graph/api/tenantrelationship-list-delegatedadminrelationships
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from exporter.client import PAGE_SIZE, drop_duplicates, log_duplicates, log_skipped, parse_time, text_field
from exporter.collectors.graph import GraphClient
from exporter.collectors.kind import Context, Kind
from exporter.families import CACHED, Family, Samples, bool_label

log = logging.getLogger("exporter.client")

NAME = "gdap_relationships"

# delegatedAdminRelationshipStatus as Graph v1.0 documents it. Graph sends unknownFutureValue for
# members added later, unless the client opts in to them, so this list is closed.
GDAP_STATUSES: tuple[str, ...] = (
    "activating", "active", "approvalPending", "approved", "created", "expired", "expiring",
    "terminated", "terminating", "terminationRequested", "unknownFutureValue")
# Statuses in which the relationship gives the partner access to the customer today. Graph v1.0's
# delegatedAdminRelationshipStatus: `expiring` means "the relationship has passed its expiration
# date" and is being deprovisioned, so only `active` grants access.
# https://learn.microsoft.com/graph/api/resources/delegatedadminrelationship
GDAP_ACCESS_STATUSES = frozenset({"active"})
GLOBAL_ADMIN_ROLE = "62e90394-69f5-4237-9190-012177145e10"
# Statuses before access: the customer has not approved yet (created, approvalPending) or Microsoft
# is still setting the relationship up (approved, activating). Their age tells a request that is
# stuck; Microsoft cleans up approvalPending requests after 90 days (Partner Center, GDAP activity
# logs).
GDAP_WAITING_STATUSES = ("created", "approvalPending", "approved", "activating")
EXPIRY_WINDOWS_DAYS: tuple[int, ...] = (7, 30)


@dataclass(frozen=True)
class GdapRelationship:
    """One Graph delegatedAdminRelationship, reduced to what the metrics need."""

    id: str
    display_name: str
    # The customer's tenant id, lower case, and name; "" while Graph names no customer yet, as it
    # may for `created` and `approvalPending` relationships.
    customer_id: str
    customer_name: str
    status: str  # one of GDAP_STATUSES
    end_time: float | None  # Unix time of endDateTime
    # autoExtendDuration is not zero and the roles allow it: Microsoft never auto-extends a
    # relationship with Global Administrator, whatever autoExtendDuration says.
    auto_extend: bool
    global_admin: bool
    reseller: bool = False  # a resellerDelegatedAdminRelationship (indirect reseller)
    created_time: float | None = None  # createdDateTime
    modified_time: float | None = None  # lastModifiedDateTime

    @property
    def grants_access(self) -> bool:
        return self.status in GDAP_ACCESS_STATUSES and bool(self.customer_id)


@dataclass(frozen=True)
class GdapRelationships:
    """Every GDAP relationship of the partner, as one poll of Graph found them."""

    relationships: tuple[GdapRelationship, ...]
    fetched_at: float  # expiry windows are counted from here
    skipped_entries: int = 0

    def by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(GDAP_STATUSES, 0)
        for relationship in self.relationships:
            counts[relationship.status] += 1
        return counts

    def with_access(self) -> list[GdapRelationship]:
        return [r for r in self.relationships if r.grants_access]

    def customers_with_access(self) -> frozenset[str]:
        return frozenset(r.customer_id for r in self.relationships if r.grants_access)

    def expiring_without_auto_extend(self, within_days: int) -> int:
        """Relationships with access that end within that many days and will not be extended.

        An end already past is not "within N days": that relationship has ended.
        """
        limit = self.fetched_at + within_days * 86400
        return sum(1 for r in self.relationships if r.grants_access and not r.auto_extend
                   and r.end_time is not None and self.fetched_at < r.end_time <= limit)


RELATIONSHIPS_PATH = "/v1.0/tenantRelationships/delegatedAdminRelationships"


def _is_zero_duration(value: str) -> bool:
    # ISO 8601 durations: PT0S and P0D mean no auto-extension; P180D is the only other documented value.
    return not any(ch in "123456789" for ch in value)


RESELLER_TYPE = "#microsoft.graph.resellerDelegatedAdminRelationship"


def parse_relationship(entry: Any, where: str, skipped: list[str]) -> GdapRelationship | None:
    """One delegatedAdminRelationship; None (and a note in skipped) if it cannot be used.

    `customer` is "configured either by the partner at the time the relationship is created or by
    the system after the customer approves", so a `created` or `approvalPending` relationship may
    have none, or null: it still counts. Reseller relationships come in the same list.
    https://learn.microsoft.com/graph/api/resources/delegatedadminrelationship
    https://learn.microsoft.com/graph/api/resources/resellerdelegatedadminrelationship
    """
    if not isinstance(entry, dict):
        skipped.append(f"{where}: not an object")
        return None
    customer = entry.get("customer")
    if customer is not None and not isinstance(customer, dict):
        skipped.append(f"{where}.customer: not an object")
        return None
    customer = customer or {}
    customer_id = text_field(customer, "tenantId") or ""
    status = entry.get("status")
    if not isinstance(status, str) or status not in GDAP_STATUSES:
        status = "unknownFutureValue"
    times: dict[str, float | None] = {}
    for key in ("endDateTime", "createdDateTime", "lastModifiedDateTime"):
        try:
            times[key] = parse_time(entry.get(key))
        except ValueError:
            skipped.append(f"{where}.{key}: not an ISO 8601 time ({str(entry.get(key))[:40]!r})")
            return None
    extend = entry.get("autoExtendDuration")
    access = entry.get("accessDetails")
    roles = access.get("unifiedRoles") if isinstance(access, dict) else None
    role_ids = {str(r.get("roleDefinitionId", "")).lower() for r in roles or [] if isinstance(r, dict)}
    relationship_id = text_field(entry, "id") or ""
    global_admin = GLOBAL_ADMIN_ROLE in role_ids
    return GdapRelationship(
        id=relationship_id, display_name=text_field(entry, "displayName") or relationship_id,
        customer_id=customer_id.lower(), customer_name=text_field(customer, "displayName") or customer_id,
        status=status, end_time=times["endDateTime"],
        # "Don't autoextend GDAP with Global Administrator": such relationships cannot auto-extend.
        auto_extend=isinstance(extend, str) and not _is_zero_duration(extend) and not global_admin,
        global_admin=global_admin, reseller=entry.get("@odata.type") == RESELLER_TYPE,
        created_time=times["createdDateTime"], modified_time=times["lastModifiedDateTime"])


NONE_VISIBLE_HINT = (
    "Microsoft Graph listed no GDAP relationships: if the partner has any, the signed-in user is not "
    "in the partner's Admin Agents group (Graph then answers with an empty list, not an error); add "
    "the user to Admin Agents and run login again, or read Graph app-only with graph_auth")


D = TypeVar("D")


class GraphGdapClient(GraphClient[D]):
    """What the GDAP kinds share: the relationship list and its permission."""

    resource = "delegatedAdminRelationships"
    path = RELATIONSHIPS_PATH
    permission = "DelegatedAdminRelationship.Read.All"
    user_needs = "the signed-in user needs a role that can read GDAP relationships, such as Admin agent"

    def _relationships(self) -> GdapRelationships:
        """Every relationship, following @odata.nextLink."""
        listed: list[GdapRelationship] = []
        skipped: list[str] = []
        for i, entry in enumerate(self._pages({"$top": str(PAGE_SIZE)})):
            relationship = parse_relationship(entry, f"value[{i}]", skipped)
            if relationship is not None:
                listed.append(relationship)
        relationships, duplicates = drop_duplicates(listed, lambda r: r.id)
        log_skipped(skipped, self.resource)
        log_duplicates(duplicates, self.resource)
        return GdapRelationships(tuple(relationships), fetched_at=self._clock(),
                                 skipped_entries=len(skipped))


class GdapRelationshipsClient(GraphGdapClient[GdapRelationships]):
    """Microsoft Graph delegatedAdminRelationships, following @odata.nextLink."""

    collector = NAME

    def fetch(self) -> GdapRelationships:
        data = self._relationships()
        if not data.relationships and not data.skipped_entries and self.tokens.method != "client_credentials":
            # Graph answers 200 with an empty list, not 403, when the signed-in user is not in the
            # partner's Admin Agents group (by design, microsoft-graph-docs-contrib issue 8921).
            log.warning(NONE_VISIBLE_HINT, extra={"tenant": self.name})
        return data


BY_STATUS = Family(
    "partnercenter_gdap_relationships", "gauge",
    f"GDAP relationships of the partner by status, every documented status listed. {CACHED}",
    ["tenant", "status"])
END_TIME = Family(
    "partnercenter_gdap_relationship_end_timestamp_seconds", "gauge",
    "Unix time at which a GDAP relationship that grants access (status active) ends, one "
    f"series per relationship. {CACHED}",
    ["tenant", "relationship_id", "relationship_name", "customer_tenant_id", "customer_name",
     "auto_extend", "global_admin"])
EXPIRING = Family(
    "partnercenter_gdap_relationships_expiring_without_auto_extend", "gauge",
    "Active GDAP relationships that end within within_days days of the last successful poll "
    f"(not already past) and are not extended automatically. {CACHED}", ["tenant", "within_days"])
GLOBAL_ADMIN = Family(
    "partnercenter_gdap_relationships_with_global_admin", "gauge",
    f"Active GDAP relationships that include the Global Administrator role. {CACHED}", ["tenant"])
WAITING = ("tenant", "relationship_id", "relationship_name", "customer_tenant_id", "customer_name",
           "status")
CREATED = Family(
    "partnercenter_gdap_relationship_created_timestamp_seconds", "gauge",
    "Unix time at which a GDAP relationship that does not grant access yet (created, "
    "approvalPending, approved, activating) was created; customer_tenant_id is empty while Graph "
    f"names no customer. {CACHED}", WAITING)
MODIFIED = Family(
    "partnercenter_gdap_relationship_last_modified_timestamp_seconds", "gauge",
    "Unix time at which a GDAP relationship that does not grant access yet (created, "
    f"approvalPending, approved, activating) last changed. {CACHED}", WAITING)


def samples(out: Samples, tenant: str, data: GdapRelationships, ctx: Context) -> None:
    for status, count in data.by_status().items():
        out.add(BY_STATUS, (tenant, status), count)
    with_access = data.with_access()
    for r in with_access:
        if r.end_time is not None:
            out.add(END_TIME, (tenant, r.id, r.display_name, r.customer_id, r.customer_name,
                               bool_label(r.auto_extend), bool_label(r.global_admin)), r.end_time)
    for days in EXPIRY_WINDOWS_DAYS:
        out.add(EXPIRING, (tenant, str(days)), data.expiring_without_auto_extend(days))
    out.add(GLOBAL_ADMIN, (tenant,), sum(1 for r in with_access if r.global_admin))
    for r in data.relationships:
        if r.status in GDAP_WAITING_STATUSES:
            who = (tenant, r.id, r.display_name, r.customer_id, r.customer_name, r.status)
            if r.created_time is not None:
                out.add(CREATED, who, r.created_time)
            if r.modified_time is not None:
                out.add(MODIFIED, who, r.modified_time)


def figures(data: GdapRelationships, ctx: Context) -> str:
    if not data.relationships:
        return ("no GDAP relationships visible: if the partner has any, the signed-in user is "
                "not in the Admin Agents group (or use graph_auth app-only)")
    return f"{len(data.with_access())} active relationships, {len(data.customers_with_access())} customers"


KIND: Kind[GdapRelationships] = Kind(
    name=NAME,
    build=lambda s: GdapRelationshipsClient(s.tenant, s.http, s.endpoints.graph_url, s.graph_tokens),
    families=(BY_STATUS, END_TIME, EXPIRING, GLOBAL_ADMIN, CREATED, MODIFIED), samples=samples,
    figures=figures, summary=lambda data: {"gdap_relationships": len(data.relationships)},
    uses_graph=True)
