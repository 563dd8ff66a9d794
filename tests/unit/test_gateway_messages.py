"""The gateway's reading of client messages: JSON-RPC envelopes, 2026-07-28 header agreement, SSE framing."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.gateway import jsonrpc
from chamberlain.gateway.jsonrpc import ClientMessage, InvalidMessage, parse_client_document, target_name
from chamberlain.gateway.request_metadata import decode_header_value, mismatch, requires_metadata
from chamberlain.gateway.sse import EventTooLarge, event_data, message_event, split_events

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_invalid_message(body: bytes) -> None:
    outcome = _parse(body)
    assert outcome in (jsonrpc.PARSE_ERROR, jsonrpc.INVALID_REQUEST) or (isinstance(outcome, list) and outcome)


@given(json_values)
def test_any_json_document_either_parses_or_raises_invalid_message(document: object) -> None:
    outcome = _parse(json.dumps(document).encode())
    assert outcome == jsonrpc.INVALID_REQUEST or isinstance(outcome, list)


def _parse(body: bytes) -> int | list[ClientMessage]:
    """The error code parsing raised, or what it returned; any other exception escapes and fails the test."""
    try:
        _, messages, _ = parse_client_document(body)
    except InvalidMessage as invalid:
        return invalid.code
    return messages


@pytest.mark.parametrize(
    ("body", "kind", "request_id", "method"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', "request", 1, "tools/list"),
        (b'{"jsonrpc":"2.0","id":"a","method":"ping"}', "request", "a", "ping"),
        (b'{"jsonrpc":"2.0","method":"notifications/initialized"}', "notification", None, "notifications/initialized"),
        (b'{"jsonrpc":"2.0","id":5,"result":{}}', "response", 5, None),
    ],
)
def test_messages_are_classified(body: bytes, kind: str, request_id: object, method: str | None) -> None:
    _, [message], batch = parse_client_document(body)
    assert (message.kind, message.id, message.method, batch) == (kind, request_id, method, False)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"1.0","id":1,"method":"x"}',
        b'{"jsonrpc":"2.0","id":null,"method":"x"}',  # MCP: request ids are never null
        b'{"jsonrpc":"2.0","id":true,"method":"x"}',
        b'{"jsonrpc":"2.0","id":1,"method":7}',
        b'{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}',  # MCP params are objects
        b'{"jsonrpc":"2.0","id":1}',
        b"[]",
        b"[1]",
    ],
)
def test_malformed_messages_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidMessage):
        parse_client_document(body)


def test_a_batch_is_recognised() -> None:
    _, messages, batch = parse_client_document(
        b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]'
    )
    assert batch
    assert [message.kind for message in messages] == ["request", "notification"]


def test_the_target_of_named_methods() -> None:
    call = ClientMessage("request", 1, "tools/call", {"name": "echo"})
    read = ClientMessage("request", 1, "resources/read", {"uri": "file:///a"})
    assert target_name(call) == ("tools", "echo")
    assert target_name(read) == ("resources", "file:///a")
    assert target_name(ClientMessage("request", 1, "tools/list", {})) is None
    with pytest.raises(InvalidMessage):
        target_name(ClientMessage("request", 1, "tools/call", {"name": 3}))


# -- 2026-07-28 request metadata ---------------------------------------------------------------------------------

CALL = ClientMessage("request", 1, "tools/call", {"name": "echo", "arguments": {}})


def test_only_modern_revisions_require_metadata() -> None:
    assert requires_metadata("2026-07-28")
    assert requires_metadata("2027-01-01")
    assert not requires_metadata("2025-11-25")
    assert not requires_metadata(None)


def test_agreeing_headers_pass() -> None:
    assert mismatch(CALL, "2026-07-28", "tools/call", "echo") is None
    encoded = "=?base64?" + base64.b64encode(b"echo").decode() + "?="
    assert mismatch(CALL, "2026-07-28", "tools/call", encoded) is None


@pytest.mark.parametrize(
    ("method", "name"),
    [
        (None, "echo"),
        ("tools/list", "echo"),
        ("tools/call", None),
        ("tools/call", "other"),
        ("tools/call", "=?base64?not base64!?="),
        ("tools/call", "=?base64?" + base64.b64encode(b"other").decode() + "?="),
    ],
)
def test_disagreeing_headers_are_reported(method: str | None, name: str | None) -> None:
    assert mismatch(CALL, "2026-07-28", method, name) is not None


def test_the_protocol_version_in_meta_must_agree() -> None:
    meta = {"_meta": {"io.modelcontextprotocol/protocolVersion": "2025-11-25"}}
    message = ClientMessage("request", 1, "tools/list", meta)
    assert mismatch(message, "2026-07-28", "tools/list", None) is not None


def test_notifications_are_not_checked() -> None:
    notification = ClientMessage("notification", None, "notifications/cancelled", {})
    assert mismatch(notification, "2026-07-28", None, None) is None


@given(st.text(max_size=40))
def test_the_base64_sentinel_round_trips(value: str) -> None:
    encoded = "=?base64?" + base64.b64encode(value.encode()).decode() + "?="
    assert decode_header_value(encoded) == value


# -- SSE framing -------------------------------------------------------------------------------------------------


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        yield data[start:cut]
        start = cut
    yield data[start:]


async def _collect(data: bytes, cuts: list[int], limit: int = 10_000) -> list[bytes]:
    return [event async for event in split_events(_chunks(data, cuts), limit)]


events_strategy = st.lists(
    st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), min_size=1, max_size=5
)


@given(
    events_strategy, st.lists(st.integers(min_value=0, max_value=400), max_size=10), st.sampled_from([b"\n", b"\r\n"])
)
async def test_events_survive_any_chunking(payloads: list[bytes], cuts: list[int], newline: bytes) -> None:
    stream = b"".join(b"data: " + payload + newline + newline for payload in payloads)
    cuts = [cut for cut in cuts if cut <= len(stream)]
    events = await _collect(stream, cuts)
    assert [event_data(event) for event in events] == payloads


async def test_an_event_over_the_limit_is_refused() -> None:
    with pytest.raises(EventTooLarge):
        await _collect(b"data: " + b"x" * 200, [50, 100, 150], limit=100)


def test_event_data_joins_lines_and_ignores_comments() -> None:
    assert event_data(b": keep-alive\n\n") is None
    assert event_data(b"event: message\r\nid: 3\r\ndata: a\r\ndata:b\r\n\r\n") == b"a\nb"
    assert event_data(message_event(b'{"x":1}')) == b'{"x":1}'
