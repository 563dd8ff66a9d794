"""Session binding, list filtering and event delivery: the gateway's own decisions, without a network."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

from hypothesis import given
from hypothesis import strategies as st

from chamberlain.gateway.events import EventBus, GatewayEvent
from chamberlain.gateway.listing import Kind, filter_list_response
from chamberlain.gateway.sessions import SessionBinder
from chamberlain.oauth.access_tokens import AccessTokenClaims

ALICE = AccessTokenClaims(
    subject="alice",
    client_id="client-a",
    audience=("http://127.0.0.1/mcp/up",),
    scopes=frozenset({"mcp:tools"}),
    expires_at=2_000_000_000,
    issued_at=1_000_000_000,
    jti="j1",
    grant_id="g1",
    tenant="default",
    auth_time=None,
    roles=("developer",),
    raw={},
)
BINDER = SessionBinder(secrets.token_bytes(32))
session_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)


@given(session_ids)
def test_a_bound_session_id_comes_back_for_its_owner(upstream_id: str) -> None:
    assert BINDER.unbind(BINDER.bind(upstream_id, "up", ALICE), "up", ALICE) == upstream_id


@given(session_ids)
def test_a_bound_session_id_is_refused_to_anyone_else(upstream_id: str) -> None:
    bound = BINDER.bind(upstream_id, "up", ALICE)
    for other in (
        dataclasses.replace(ALICE, subject="mallory"),
        dataclasses.replace(ALICE, client_id="client-b"),
        dataclasses.replace(ALICE, tenant="other"),
    ):
        assert BINDER.unbind(bound, "up", other) is None
    assert BINDER.unbind(bound, "other-server", ALICE) is None
    assert SessionBinder(secrets.token_bytes(32)).unbind(bound, "up", ALICE) is None


@given(session_ids)
def test_an_unbound_or_tampered_session_id_is_refused(upstream_id: str) -> None:
    assert BINDER.unbind(upstream_id, "up", ALICE) is None or "~" in upstream_id
    bound = BINDER.bind(upstream_id, "up", ALICE)
    assert BINDER.unbind(bound[:-1] + ("A" if bound[-1] != "A" else "B"), "up", ALICE) is None


class OnlyPrefixed:
    def permits(self, kind: Kind, name: str) -> bool:
        return name.startswith("ok")


def test_list_results_keep_only_permitted_items() -> None:
    response = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [{"name": "ok_1"}, {"name": "bad"}, {"title": "no name"}, "junk"], "nextCursor": "c"},
    }
    assert filter_list_response(response, "tools/list", OnlyPrefixed())
    assert response["result"] == {"tools": [{"name": "ok_1"}], "nextCursor": "c"}
    templates = {"jsonrpc": "2.0", "id": 2, "result": {"resourceTemplates": [{"uriTemplate": "bad://{x}"}]}}
    assert filter_list_response(templates, "resources/templates/list", OnlyPrefixed())
    assert templates["result"] == {"resourceTemplates": []}


def test_errors_and_unchanged_lists_are_left_alone() -> None:
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "x"}}
    assert not filter_list_response(error, "tools/list", OnlyPrefixed())
    allowed = {"jsonrpc": "2.0", "id": 1, "result": {"prompts": [{"name": "ok"}]}}
    assert not filter_list_response(allowed, "prompts/list", OnlyPrefixed())


def _event(target: str) -> GatewayEvent:
    return GatewayEvent("allowed", "up", "tools/call", target, "default", "alice", "client-a")


async def test_events_reach_subscribers_off_the_request_path() -> None:
    bus = EventBus()
    seen: list[GatewayEvent] = []
    bus.subscribe(seen.append)

    def failing(event: GatewayEvent) -> None:
        raise RuntimeError("a broken subscriber")

    bus.subscribe(failing)
    await bus.start()
    bus.emit(_event("echo"))
    assert seen == []  # emitting only queues
    await asyncio.sleep(0.01)
    assert [event.target for event in seen] == ["echo"]
    bus.emit(_event("add"))
    await bus.aclose()  # closing delivers what is still queued
    assert [event.target for event in seen] == ["echo", "add"]


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    bus = EventBus(max_queued=2)
    for name in ("a", "b", "c"):
        bus.emit(_event(name))
    assert bus.dropped == 1
    await bus.aclose()
