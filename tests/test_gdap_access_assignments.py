"""The gdap_access_assignments client: JSON batches at the HTTP boundary (respx), and against the
simulator over real sockets where it follows Graph's reference pages.

https://learn.microsoft.com/graph/api/delegatedadminrelationship-list-accessassignments
https://learn.microsoft.com/graph/json-batching
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from exporter.app import identity
from exporter.auth import TokenProvider
from exporter.collectors.gdap_access_assignments import GdapAccessAssignmentsClient, parse_assignment
from exporter.model import PollError
from exporter.simulator import Simulator
from exporter.simulator.data import relationship
from tests.conftest import CLIENT_ID, TENANT_ID, endpoints, tenant
from tests.helpers.samples import FakeTokens

GRAPH = "https://graph.test.invalid"
RELATIONSHIPS = f"{GRAPH}/v1.0/tenantRelationships/delegatedAdminRelationships"
BATCH = f"{GRAPH}/v1.0/$batch"
NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp()


def client(tokens: FakeTokens | None = None, sleeps: list[float] | None = None,
           http: httpx.Client | None = None, graph_url: str = GRAPH) -> GdapAccessAssignmentsClient:
    record = sleeps if sleeps is not None else []
    return GdapAccessAssignmentsClient("contoso", http or httpx.Client(), graph_url, tokens or FakeTokens(),
                                       clock=lambda: NOW, sleep=record.append)


def rel(name: str, status: str = "active") -> dict[str, Any]:
    return {"id": f"r-{name}", "displayName": name, "status": status, "endDateTime": "2027-01-01T00:00:00Z",
            "autoExtendDuration": "PT0S", "customer": {"tenantId": f"c-{name}", "displayName": name}}


def assignment(name: str, status: str = "active") -> dict[str, Any]:
    return {"id": f"a-{name}", "status": status, "lastModifiedDateTime": "2026-11-20T10:00:00.1234567Z",
            "accessContainer": {"accessContainerId": f"G-{name}", "accessContainerType": "securityGroup"}}


def answer(request: httpx.Request, respond: Any) -> httpx.Response:
    """A $batch answer built by respond(inner request) -> (status, body, headers), in reverse order."""
    steps = json.loads(request.content)["requests"]
    responses = []
    for step in steps:
        status, body, headers = respond(step)
        responses.append({"id": step["id"], "status": status, "headers": headers, "body": body})
    return httpx.Response(200, json={"responses": responses[::-1]})


@respx.mock
def test_assignments_of_active_relationships_only_are_read_in_batches_of_20() -> None:
    """45 active relationships and 3 pending ones: three $batch POSTs of 20, 20 and 5 GETs, each
    for an active relationship's accessAssignments with $top=300; answers in any order are matched
    by id."""
    listed = [rel(str(i)) for i in range(45)] + [rel(f"p{i}", "approvalPending") for i in range(3)]
    respx.get(RELATIONSHIPS).respond(200, json={"value": listed})
    asked: list[str] = []

    def respond(step: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        asked.append(step["url"])
        name = step["url"].split("/")[3].removeprefix("r-")
        return 200, {"value": [assignment(name)]}, {}

    route = respx.post(BATCH).mock(side_effect=lambda request: answer(request, respond))
    result = client().fetch()
    assert [len(json.loads(call.request.content)["requests"]) for call in route.calls] == [20, 20, 5]
    assert asked[0] == "/tenantRelationships/delegatedAdminRelationships/r-0/accessAssignments?$top=300"
    assert sorted(result.assignments) == sorted(f"r-{i}" for i in range(45))
    assert all(a[0].id == f"a-{rid[2:]}" for rid, a in result.assignments.items())


@respx.mock
def test_a_throttled_request_in_a_batch_is_asked_again_after_its_retry_after() -> None:
    """An inner 429 with Retry-After: 3 is sent again in a later batch after a 3 s wait; its
    neighbours are not asked twice."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a"), rel("b")]})
    asked: list[str] = []

    def respond(step: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        asked.append(step["url"])
        if "r-b" in step["url"] and asked.count(step["url"]) == 1:
            return 429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "3"}
        return 200, {"value": [assignment(step["url"].split("/")[3])]}, {}

    respx.post(BATCH).mock(side_effect=lambda request: answer(request, respond))
    sleeps: list[float] = []
    result = client(sleeps=sleeps).fetch()
    assert [url.split("/")[3] for url in asked] == ["r-a", "r-b", "r-b"]
    assert len(sleeps) == 1
    assert 2.5 < sleeps[0] <= 3
    assert len(result.assignments["r-b"]) == 1


@respx.mock
def test_a_403_inside_a_batch_is_an_auth_error_naming_the_permission() -> None:
    """Graph refuses a batched accessAssignments read with 403: the poll fails with reason auth and
    a message that names DelegatedAdminRelationship.Read.All, never Graph's own text."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a")]})
    respx.post(BATCH).mock(side_effect=lambda request: answer(request, lambda step: (
        403, {"error": {"code": "Authorization_RequestDenied", "message": "secret-ish upstream text"}}, {})))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == "auth"
    assert "DelegatedAdminRelationship.Read.All" in caught.value.message
    assert "[Authorization_RequestDenied]" in caught.value.message
    assert "upstream text" not in caught.value.message


@respx.mock
def test_a_batch_answer_missing_a_response_is_an_invalid_response() -> None:
    """A $batch answer that leaves out one of the requests' answers fails the poll, rather than
    calling that relationship one without access."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a"), rel("b")]})
    respx.post(BATCH).respond(200, json={"responses": [{"id": "0", "status": 200, "body": {"value": []}}]})
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == "invalid_response"
    assert "without 1 of the answers" in caught.value.message


@respx.mock
def test_a_next_link_to_another_host_is_refused() -> None:
    """An inner page whose nextLink points away from the Graph host is not followed: the token
    would go with it."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a")]})
    respx.post(BATCH).mock(side_effect=lambda request: answer(request, lambda step: (
        200, {"value": [], "@odata.nextLink": "https://evil.test.invalid/v1.0/x"}, {})))
    with pytest.raises(PollError, match=r"^accessAssignments pointed its next page away") as caught:
        client().fetch()
    assert "refusing to send the token there" in caught.value.message


@respx.mock
def test_a_relationship_gone_before_its_assignments_are_read_is_skipped() -> None:
    """A 404 for one relationship (deleted between the list and the batch) is noted as skipped; the
    others are read."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a"), rel("b")]})
    def respond(step: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if "r-a" in step["url"]:
            return 404, {"error": {"code": "NotFound"}}, {}
        return 200, {"value": [assignment("b")]}, {}

    respx.post(BATCH).mock(side_effect=lambda request: answer(request, respond))
    result = client().fetch()
    assert result.assignments["r-a"] == ()
    assert result.skipped_entries == 1


@respx.mock
def test_an_assignment_listed_on_two_pages_is_one_series_and_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """Paging that shifts under us lists one assignment on two pages of its relationship: it counts
    once, and the log says how many were dropped."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a")]})

    def respond(step: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if "skiptoken" in step["url"]:
            return 200, {"value": [assignment("y"), assignment("z")]}, {}
        return 200, {"value": [assignment("x"), assignment("y")],
                     "@odata.nextLink": f"{RELATIONSHIPS}/r-a/accessAssignments?$skiptoken=2"}, {}

    respx.post(BATCH).mock(side_effect=lambda request: answer(request, respond))
    with caplog.at_level(logging.WARNING):
        result = client().fetch()
    assert [a.id for a in result.assignments["r-a"]] == ["a-x", "a-y", "a-z"]
    record = next(r for r in caplog.records
                  if r.getMessage() == "entries listed more than once were counted once")
    assert record.__dict__["duplicates"] == 1


def test_assignment_fields_are_parsed_and_unknown_statuses_are_unknown_future_value() -> None:
    """status, the security group (lower case) and lastModifiedDateTime's seven digits are read; a
    status Graph adds later counts as unknownFutureValue; a bad time skips the entry."""
    skipped: list[str] = []
    parsed = parse_assignment(assignment("x", "error"), "v", skipped)
    assert parsed is not None
    assert (parsed.status, parsed.access_container_id) == ("error", "g-x")
    assert parsed.modified_time == pytest.approx(dt.datetime(2026, 11, 20, 10, 0, 0, 123457,
                                                             tzinfo=dt.UTC).timestamp())
    future = parse_assignment({**assignment("y"), "status": "suspended"}, "v", skipped)
    assert future is not None
    assert future.status == "unknownFutureValue"
    assert parse_assignment({**assignment("z"), "lastModifiedDateTime": "soon"}, "v", skipped) is None
    assert len(skipped) == 1


# --- against the simulator -------------------------------------------------------------------


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sim.certs.ca_file))
    with httpx.Client(verify=context, timeout=5.0) as http_client:
        yield http_client


def graph_tokens(sim: Simulator, http: httpx.Client, tmp_path: Path) -> Any:
    seed = sim.issue_refresh_token(TENANT_ID, CLIENT_ID, "admin@contoso.test", mfa=True)
    provider = TokenProvider(identity(tenant(seed=seed, cache=tmp_path / "cache.json"),
                                      endpoints(**sim.endpoints_config())), http)
    return provider.for_scope("https://graph.microsoft.com/.default")


def test_450_assignments_on_one_relationship_at_a_server_page_of_100_are_all_counted(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """The simulator sends at most 100 assignments a page, with a nextLink, below the $top of 300
    asked: all 450 of one relationship are read through later batches (and every other active
    relationship's too)."""
    many = relationship("c-many", "Many Groups Ltd", now=dt.datetime.now(dt.UTC), name="many",
                        assignments=("active",) * 300 + ("deleted",) * 100 + ("error",) * 50)
    sim.tenants[TENANT_ID].relationships.append(many)
    result = GdapAccessAssignmentsClient("contoso", http, sim.graph_url,
                                         graph_tokens(sim, http, tmp_path)).fetch()
    assert len(result.assignments[many.id]) == 450
    assert result.active_assignments(many.id) == 300
    for r in sim.tenants[TENANT_ID].relationships:
        if r.status == "active":
            assert [a.status for a in result.assignments[r.id]] == [a.status for a in r.assignments]
    assert result.skipped_entries == 0


def test_graph_refuses_an_app_without_consent_with_403_and_the_poll_names_the_permission(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """An app without admin consent to DelegatedAdminRelationship.Read.All gets Graph's 403
    (Authorization_RequestDenied): reason auth, and the message names the permission."""
    sim.graph_unconsented.add(CLIENT_ID)
    with pytest.raises(PollError) as caught:
        GdapAccessAssignmentsClient("contoso", http, sim.graph_url, graph_tokens(sim, http, tmp_path)).fetch()
    assert caught.value.reason == "auth"
    assert "DelegatedAdminRelationship.Read.All" in caught.value.message


def test_throttled_batch_steps_against_the_simulator_are_retried_until_complete(
        sim: Simulator, http: httpx.Client, tmp_path: Path) -> None:
    """With every 7th Graph request throttled (inner 429, Retry-After: 1), a poll still reads every
    active relationship's assignments."""
    sim.graph_throttle_every = 7
    result = GdapAccessAssignmentsClient("contoso", http, sim.graph_url, graph_tokens(sim, http, tmp_path),
                                         sleep=lambda seconds: None).fetch()
    active = [r for r in sim.tenants[TENANT_ID].relationships if r.status == "active"]
    assert sum(len(a) for a in result.assignments.values()) == sum(len(r.assignments) for r in active)


@respx.mock
def test_a_next_link_outside_the_graph_version_is_refused() -> None:
    """A nextLink on the Graph host but outside /v1.0 (say /beta) is refused, not rewritten into a
    v1.0 path."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a")]})
    respx.post(BATCH).mock(side_effect=lambda request: answer(request, lambda step: (
        200, {"value": [], "@odata.nextLink": f"{GRAPH}/beta/tenantRelationships/x?$skiptoken=1"}, {})))
    with pytest.raises(PollError, match=r"outside /v1\.0"):
        client().fetch()


@respx.mock
def test_a_step_throttled_again_and_again_fails_the_poll_as_throttled() -> None:
    """A step Graph throttles on every try is asked 11 times (10 retries), then the poll fails with
    reason throttled and Graph's Retry-After, for the poller to back off; a long Retry-After (over
    30 s) fails it at once."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a")]})
    route = respx.post(BATCH).mock(side_effect=lambda request: answer(request, lambda step: (
        429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": "2"})))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert (caught.value.reason, caught.value.retry_after) == ("throttled", 2.0)
    assert route.call_count == 11
    route.side_effect = lambda request: answer(request, lambda step: (429, {}, {"Retry-After": "120"}))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert (caught.value.reason, caught.value.retry_after) == ("throttled", 120.0)
    assert route.call_count == 12


@respx.mock
def test_a_failed_step_with_odd_headers_is_a_server_error_not_a_crash() -> None:
    """An inner 503 whose headers claim gzip for its (JSON) body fails the poll as server_error with
    Graph's status, not with a decoding error."""
    respx.get(RELATIONSHIPS).respond(200, json={"value": [rel("a")]})
    respx.post(BATCH).mock(side_effect=lambda request: answer(request, lambda step: (
        503, {"error": {"code": "ServiceUnavailable"}}, {"Content-Encoding": "gzip", "Retry-After": "soon"})))
    with pytest.raises(PollError) as caught:
        client().fetch()
    assert caught.value.reason == "server_error"
    assert "503" in caught.value.message
