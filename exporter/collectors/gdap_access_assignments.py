"""The gdap_access_assignments collector: the access assignments of every active GDAP relationship.

An access assignment gives a security group of the partner the relationship's roles, and only
"once it's active": an active relationship without an active assignment gives nobody access.
https://learn.microsoft.com/graph/api/resources/delegatedadminaccessassignment
https://learn.microsoft.com/graph/api/delegatedadminrelationship-list-accessassignments

One poll reads the relationship list (as gdap_relationships does), then each active relationship's
accessAssignments through Graph's JSON batching, 20 requests a POST: for 2,000 relationships that
is 100 requests instead of 2,000 (docs/performance.md has the figures). Every inner response has
its own status; a throttled one is asked again after its own Retry-After.
https://learn.microsoft.com/graph/json-batching
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from exporter.client import (
    MAX_PAGES,
    PAGE_SIZE,
    drop_duplicates,
    log_duplicates,
    log_skipped,
    page_items,
    parse_time,
    text_field,
)
from exporter.collectors.gdap_relationships import GdapRelationships, GraphGdapClient
from exporter.collectors.graph import MAX_INLINE_RETRY_AFTER
from exporter.collectors.kind import Context, Kind
from exporter.families import CACHED, Family, Samples
from exporter.model import PollError

log = logging.getLogger("exporter.client")

NAME = "gdap_access_assignments"
# delegatedAdminAccessAssignmentStatus, Graph v1.0.
ASSIGNMENT_STATUSES: tuple[str, ...] = ("pending", "active", "deleting", "deleted", "error",
                                        "unknownFutureValue")
# Graph keeps deleted assignments as history; each of the others is worth a series of its own.
NOTABLE_STATUSES = frozenset({"pending", "deleting", "error", "unknownFutureValue"})
# "Up to 20 requests" per JSON batch.
BATCH_SIZE = 20
GRAPH_VERSION = "/v1.0"
BATCH_PATH = GRAPH_VERSION + "/$batch"
ASSIGNMENTS_RESOURCE = "accessAssignments"
# A throttled step goes back into the queue this many times at most, and a poll waits this long in
# all: past either, the poll fails as throttled and the poller backs off, rather than a poll that
# hundreds of steps keep throttled going on for an interval.
MAX_STEP_RETRIES = 10
MAX_THROTTLED_WAIT = 120.0


@dataclass(frozen=True)
class AccessAssignment:
    """One delegatedAdminAccessAssignment, reduced to what the metrics need."""

    id: str
    status: str  # one of ASSIGNMENT_STATUSES
    access_container_id: str  # the partner's security group
    modified_time: float | None  # lastModifiedDateTime


@dataclass(frozen=True)
class GdapAccess:
    """The relationship list and, per active relationship id, its access assignments, read in one
    poll, so the two always agree."""

    relationships: GdapRelationships
    assignments: Mapping[str, tuple[AccessAssignment, ...]]
    skipped_entries: int = 0

    def active_assignments(self, relationship_id: str) -> int:
        return sum(1 for a in self.assignments.get(relationship_id, ()) if a.status == "active")

    def by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(ASSIGNMENT_STATUSES, 0)
        for assignments in self.assignments.values():
            for assignment in assignments:
                counts[assignment.status] += 1
        return counts


def parse_assignment(entry: Any, where: str, skipped: list[str]) -> AccessAssignment | None:
    """One delegatedAdminAccessAssignment; None (and a note in skipped) if it cannot be used."""
    if not isinstance(entry, dict):
        skipped.append(f"{where}: not an object")
        return None
    status = entry.get("status")
    if not isinstance(status, str) or status not in ASSIGNMENT_STATUSES:
        status = "unknownFutureValue"
    try:
        modified = parse_time(entry.get("lastModifiedDateTime"))
    except ValueError:
        skipped.append(f"{where}.lastModifiedDateTime: not an ISO 8601 time "
                       f"({str(entry.get('lastModifiedDateTime'))[:40]!r})")
        return None
    container = entry.get("accessContainer")
    group = text_field(container, "accessContainerId") if isinstance(container, dict) else None
    return AccessAssignment(id=text_field(entry, "id") or "", status=status,
                            access_container_id=(group or "").lower(), modified_time=modified)


def _inner_headers(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


class GdapAccessAssignmentsClient(GraphGdapClient[GdapAccess]):
    """The relationship list, then the accessAssignments of each active relationship in JSON batches."""

    collector = NAME

    def fetch(self) -> GdapAccess:
        relationships = self._relationships()
        skipped: list[str] = []
        ids = [r.id for r in relationships.relationships if r.status == "active" and r.id]
        found = self._assignments(ids, skipped)
        log_skipped(skipped, ASSIGNMENTS_RESOURCE)
        log_duplicates(self._drop_duplicates(found), ASSIGNMENTS_RESOURCE)
        return GdapAccess(relationships, {rid: tuple(found[rid]) for rid in ids},
                          skipped_entries=relationships.skipped_entries + len(skipped))

    def _assignments(self, ids: list[str], skipped: list[str]) -> dict[str, list[AccessAssignment]]:
        graph = self._url[: self._url.index(GRAPH_VERSION)]
        found: dict[str, list[AccessAssignment]] = {rid: [] for rid in ids}
        # (relationship id, relative URL, times throttled, not before): first pages, then nextLinks.
        # A throttled request goes to the back of the queue, so only a batch that holds it waits.
        queue = [(rid, f"/tenantRelationships/delegatedAdminRelationships/{quote(rid, safe='')}"
                       f"/accessAssignments?$top={PAGE_SIZE}", 0, 0.0) for rid in ids]
        pages = dict.fromkeys(ids, 0)
        waited = 0.0
        while queue:
            batch, queue = queue[:BATCH_SIZE], queue[BATCH_SIZE:]
            wait = max(not_before for *_, not_before in batch) - self._monotonic()
            if wait > 0:
                waited += wait
                log.info("Graph throttled requests of a batch; waiting as Retry-After asks",
                         extra={"tenant": self.name, "retry_after": f"{wait:.0f}s"})
                self._sleep(wait)
            answers = self._post_batch(graph, [url for _, url, *_ in batch])
            for (rid, url, throttled, _), (status, headers, body) in zip(batch, answers, strict=True):
                if status == 429:
                    error = self._inner_error(status, headers, body)
                    if (throttled == MAX_STEP_RETRIES or error.retry_after is None
                            or error.retry_after > MAX_INLINE_RETRY_AFTER
                            or waited + error.retry_after > MAX_THROTTLED_WAIT):
                        raise error
                    queue.append((rid, url, throttled + 1, self._monotonic() + error.retry_after))
                    continue
                if status == 404:
                    # Deleted between the list and this read: it gives nobody access any more.
                    skipped.append(f"relationship {rid[:80]}: gone (404) before its accessAssignments "
                                   f"were read")
                    continue
                if status != 200:
                    raise self._inner_error(status, headers, body)
                pages[rid] += 1
                for entry in page_items(body, ASSIGNMENTS_RESOURCE):
                    assignment = parse_assignment(entry, f"{rid[:80]}.value[{len(found[rid])}]", skipped)
                    if assignment is not None:
                        found[rid].append(assignment)
                link = self._next_link(body, ASSIGNMENTS_RESOURCE)
                if link is not None:
                    if not link.startswith(graph + GRAPH_VERSION + "/"):
                        raise PollError("invalid_response", f"{ASSIGNMENTS_RESOURCE} sent a next page "
                                                            f"outside {GRAPH_VERSION} of {graph}")
                    if pages[rid] == MAX_PAGES:
                        raise PollError("invalid_response", f"{ASSIGNMENTS_RESOURCE} of one "
                                                            f"relationship had more than {MAX_PAGES} "
                                                            f"pages; stopped reading")
                    queue.append((rid, link[len(graph) + len(GRAPH_VERSION):], 0, 0.0))
        return found

    @staticmethod
    def _drop_duplicates(found: dict[str, list[AccessAssignment]]) -> int:
        """An assignment listed on two pages of its relationship (paging that shifted while it was
        read) is kept once, so it is one series and counts once; how many were dropped."""
        dropped = 0
        for rid, assignments in found.items():
            found[rid], duplicates = drop_duplicates(assignments, lambda a: a.id)
            dropped += duplicates
        return dropped

    def _post_batch(self, graph: str, urls: list[str]) -> list[tuple[int, dict[str, str], Any]]:
        """One $batch POST; each request's (status, headers, body), in the order asked.

        Graph may answer the requests of a batch in any order: they are matched by id.
        """
        body = {"requests": [{"id": str(i), "method": "GET", "url": url} for i, url in enumerate(urls)]}
        payload = self._page_with_retries(lambda: self._call_json("POST", graph + BATCH_PATH, json=body))
        responses = payload.get("responses") if isinstance(payload, dict) else None
        if not isinstance(responses, list):
            raise PollError("invalid_response", "Microsoft Graph answered a $batch without a responses "
                                                "list")
        by_id: dict[str, tuple[int, dict[str, str], Any]] = {}
        for item in responses:
            if isinstance(item, dict) and isinstance(item.get("status"), int):
                by_id[str(item.get("id"))] = (item["status"], _inner_headers(item.get("headers")),
                                              item.get("body"))
        missing = [str(i) for i in range(len(urls)) if str(i) not in by_id]
        if missing:
            raise PollError("invalid_response", f"Microsoft Graph answered a $batch of {len(urls)} "
                                                f"requests without {len(missing)} of the answers")
        return [by_id[str(i)] for i in range(len(urls))]

    def _inner_error(self, status: int, headers: dict[str, str], body: Any) -> PollError:
        """A batched request's failure, classified as if it had come alone. Of its headers only
        Retry-After counts: the body is JSON already, whatever a Content-Encoding says."""
        content = json.dumps(body).encode() if isinstance(body, (dict, list)) else b""
        retry = {k: v for k, v in headers.items() if k.lower() == "retry-after"}
        return self._error(httpx.Response(status, headers=retry, content=content))


ASSIGNMENTS = Family(
    "partnercenter_gdap_access_assignments", "gauge",
    "Access assignments of the partner's active GDAP relationships by status, every documented "
    f"status listed. Only an active assignment gives the members of its security group access. {CACHED}",
    ["tenant", "status"])
PER_RELATIONSHIP = ("tenant", "relationship_id", "customer_tenant_id", "customer_name")
ACTIVE_PER_RELATIONSHIP = Family(
    "partnercenter_gdap_relationship_active_access_assignments", "gauge",
    "Active access assignments of each active GDAP relationship; 0 means the relationship gives "
    f"nobody access. {CACHED}", PER_RELATIONSHIP)
NOT_ACTIVE = Family(
    "partnercenter_gdap_access_assignment_last_modified_timestamp_seconds", "gauge",
    "Unix time at which an access assignment that is not active (pending, error, deleting, "
    "unknownFutureValue; deleted ones are history and left out) last changed, with the security "
    f"group it is for (access_container_id). {CACHED}",
    [*PER_RELATIONSHIP, "assignment_id", "status", "access_container_id"])


def samples(out: Samples, tenant: str, data: GdapAccess, ctx: Context) -> None:
    for status, count in data.by_status().items():
        out.add(ASSIGNMENTS, (tenant, status), count)
    for r in data.relationships.relationships:
        if r.id not in data.assignments:
            continue
        who = (tenant, r.id, r.customer_id, r.customer_name)
        out.add(ACTIVE_PER_RELATIONSHIP, who, data.active_assignments(r.id))
        for a in data.assignments[r.id]:
            if a.status in NOTABLE_STATUSES:
                out.add(NOT_ACTIVE, (*who, a.id, a.status, a.access_container_id), a.modified_time or 0)


def figures(data: GdapAccess, ctx: Context) -> str:
    without = sum(1 for rid in data.assignments if not data.active_assignments(rid))
    return (f"{data.by_status()['active']} active assignments, {without} of "
            f"{len(data.assignments)} active relationships without one")


KIND: Kind[GdapAccess] = Kind(
    name=NAME,
    build=lambda s: GdapAccessAssignmentsClient(s.tenant, s.http, s.endpoints.graph_url, s.graph_tokens),
    families=(ASSIGNMENTS, ACTIVE_PER_RELATIONSHIP, NOT_ACTIVE), samples=samples, figures=figures,
    summary=lambda data: {"gdap_access_assignments": sum(len(a) for a in data.assignments.values())},
    uses_graph=True,
    requires={"gdap_relationships": "gdap_access_assignments completes the GDAP relationships' view "
                                    "(statuses, lifecycle, expiry) with who has access"})
