"""The usage meter on Messages API responses as the API sends them (fixtures written from Anthropic's documented wire
format: tool use, 5-minute and 1-hour cache writes, cache reads, web searches), whole, streamed, chunked anyhow and
cut off; priced by hand to the exact Decimal. Malformed input of any kind never raises (Hypothesis)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chamberlain.cost.pricing import Pricing
from chamberlain.cost.usage import MAX_COUNT, TokenUsage, UsageMeter
from chamberlain.gateway.sse import split_events

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cost"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
PRICING = Pricing.load()


def events(name: str) -> list[bytes]:
    """The fixture's events, each with its terminating blank line, as a relay hands them over."""
    raw = (FIXTURES / name).read_bytes()
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


def metered(parts: list[bytes]) -> UsageMeter:
    meter = UsageMeter()
    for event in parts:
        meter.feed_event(event)
    return meter


# -- streamed --------------------------------------------------------------------------------------------------


def test_a_streamed_tool_use_answer_with_cache_reads() -> None:
    meter = metered(events("stream_tool_use.sse"))
    assert meter.complete
    assert meter.model == "claude-sonnet-4-5-20250929"
    assert meter.service_tier == "standard"
    # message_start gave input and cache figures; message_delta the cumulative output (older API versions).
    assert meter.usage == TokenUsage(
        input_tokens=4, output_tokens=142, cache_creation_input_tokens=1867, cache_read_input_tokens=31212
    )
    # Sonnet 4.5: 4 x $3 + 1,867 x $3.75 (5-minute writes) + 31,212 x $0.30 + 142 x $15, per million tokens
    # = (12 + 7,001.25 + 9,363.60 + 2,130) / 1,000,000
    assert PRICING.cost(meter.model, meter.usage, at=NOW) == Decimal("0.01850685")


def test_a_streamed_answer_whose_message_delta_repeats_every_count() -> None:
    meter = metered(events("stream_cache_1h_web_search.sse"))
    assert meter.complete
    assert meter.usage == TokenUsage(
        input_tokens=12,
        output_tokens=1024,
        cache_creation_input_tokens=12288,
        cache_read_input_tokens=0,
        cache_creation_1h_input_tokens=10240,
        web_search_requests=2,
    )
    assert meter.usage.cache_creation_5m_input_tokens == 2048
    # Opus 4.6: 12 x $5 + 2,048 x $6.25 + 10,240 x $10 (one-hour writes) + 1,024 x $25 = $0.14086 in tokens,
    # and two web searches at $10 per thousand = $0.02.
    assert PRICING.cost("claude-opus-4-6", meter.usage, at=NOW) == Decimal("0.16086")


def test_a_stream_cut_off_keeps_what_was_reported() -> None:
    parts = events("stream_tool_use.sse")
    cut = [event for event in parts if b"message_delta" not in event and b"message_stop" not in event][:6]
    meter = metered(cut)
    assert not meter.complete
    assert meter.usage == TokenUsage(
        input_tokens=4, output_tokens=1, cache_creation_input_tokens=1867, cache_read_input_tokens=31212
    )
    # The same request priced with the one output token message_start reported:
    # (12 + 7,001.25 + 9,363.60 + 15) / 1,000,000
    assert PRICING.cost("claude-sonnet-4-5", meter.usage, at=NOW) == Decimal("0.01639185")


def test_a_stream_cut_inside_an_event_ignores_the_fragment() -> None:
    parts = events("stream_tool_use.sse")
    delta = next(index for index, event in enumerate(parts) if b"message_delta" in event)
    meter = metered([*parts[:delta], parts[delta][: len(parts[delta]) // 2]])
    assert not meter.complete
    assert meter.usage.output_tokens == 1


def test_an_error_event_ends_a_stream_incomplete() -> None:
    parts = events("stream_tool_use.sse")[:3]
    parts.append(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    meter = metered(parts)
    assert not meter.complete
    assert meter.usage.input_tokens == 4


def test_counts_are_the_latest_reported_not_a_sum() -> None:
    meter = metered(events("stream_tool_use.sse")[:1])
    for output in (10, 55, 142):
        meter.feed_event(
            b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":%d}}\n\n' % output
        )
    # A null count (older fields in newer versions) leaves the figure reported before.
    meter.feed_event(b'data: {"type":"message_delta","usage":{"output_tokens":150,"input_tokens":null}}\n\n')
    assert meter.usage.output_tokens == 150
    assert meter.usage.input_tokens == 4


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending_the_sse_specification_allows(terminator: bytes) -> None:
    parts = [event.replace(b"\n", terminator) for event in events("stream_tool_use.sse")]
    meter = metered(parts)
    assert meter.complete
    assert meter.usage.output_tokens == 142


def test_data_without_the_event_line_and_bare_json() -> None:
    meter = UsageMeter()
    for event in events("stream_cache_1h_web_search.sse"):
        data = event.split(b"data: ", 1)[1].strip()
        meter.feed_event(data)
    assert meter.complete
    assert meter.usage.web_search_requests == 2


async def test_arbitrary_chunking_through_the_event_splitter_meters_the_same() -> None:
    raw = (FIXTURES / "stream_cache_1h_web_search.sse").read_bytes()
    whole = metered(events("stream_cache_1h_web_search.sse"))
    for size in (1, 7, 64, 1000):

        async def chunks(size: int = size) -> AsyncIterator[bytes]:
            for start in range(0, len(raw), size):
                yield raw[start : start + size]

        meter = UsageMeter()
        async for event in split_events(chunks(), max_event_bytes=1 << 20):
            meter.feed_event(event)
        assert (meter.usage, meter.complete, meter.model) == (whole.usage, whole.complete, whole.model)


def test_events_before_message_start_do_not_count() -> None:
    meter = UsageMeter()
    meter.feed_event(b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":99}}\n\n')
    meter.feed_event(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert meter.usage == TokenUsage()
    assert not meter.complete


# -- not streamed ----------------------------------------------------------------------------------------------


def test_a_whole_tool_use_message() -> None:
    meter = UsageMeter()
    meter.from_body((FIXTURES / "message_tool_use.json").read_bytes())
    assert meter.complete
    assert meter.model == "claude-opus-4-5-20251101"
    assert meter.usage == TokenUsage(
        input_tokens=1500, output_tokens=800, cache_creation_input_tokens=3000, cache_read_input_tokens=45000
    )
    # Opus 4.5: 1,500 x $5 + 3,000 x $6.25 + 45,000 x $0.50 + 800 x $25 = 68,750 / 1,000,000
    assert PRICING.cost(meter.model, meter.usage, at=NOW) == Decimal("0.06875")


def test_an_error_body_used_nothing() -> None:
    meter = UsageMeter()
    meter.from_body(b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens..."}}')
    assert not meter.complete
    assert meter.usage == TokenUsage()
    assert meter.model is None


def test_a_breakdown_larger_than_its_total_is_what_counts() -> None:
    meter = UsageMeter()
    body: dict[str, Any] = {
        "type": "message",
        "model": "claude-haiku-4-5",
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 80, "ephemeral_1h_input_tokens": 50},
        },
    }
    meter.from_body(json.dumps(body).encode())
    assert meter.usage.cache_creation_input_tokens == 130
    assert meter.usage.cache_creation_1h_input_tokens == 50


@pytest.mark.parametrize(
    "value",
    [-1, MAX_COUNT + 1, 1.5, "12", True, None, [3], {"n": 3}],
    ids=["negative", "huge", "float", "string", "bool", "null", "list", "object"],
)
def test_a_count_that_is_not_a_count_is_ignored(value: object) -> None:
    meter = UsageMeter()
    meter.from_body(json.dumps({"type": "message", "usage": {"input_tokens": value, "output_tokens": 7}}).encode())
    assert meter.usage == TokenUsage(output_tokens=7)


# -- robustness ------------------------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    meter = UsageMeter()
    meter.from_body(data)
    meter.feed_event(data)
    meter.feed_event(b"event: message_start\ndata: " + data + b"\n\n")
    meter.feed_event(b"data: " + data)
    usage = meter.usage
    assert all(0 <= count <= 2 * MAX_COUNT for count in _counts(usage))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=30), children, max_size=6),
    max_leaves=30,
)
usage_keys = st.sampled_from(
    [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "server_tool_use",
        "service_tier",
    ]
)


@settings(max_examples=300)
@given(
    st.dictionaries(usage_keys, json_values, max_size=7),
    st.dictionaries(usage_keys, json_values, max_size=7),
    json_values,
)
def test_arbitrary_usage_objects_never_raise(start: dict[str, Any], delta: dict[str, Any], model: Any) -> None:
    meter = UsageMeter()
    message = {"type": "message_start", "message": {"type": "message", "model": model, "usage": start}}
    meter.feed_event(b"event: message_start\ndata: " + json.dumps(message).encode() + b"\n\n")
    meter.feed_event(b"event: message_delta\ndata: " + json.dumps({"type": "message_delta", "usage": delta}).encode())
    usage = meter.usage
    assert all(type(count) is int and count >= 0 for count in _counts(usage))
    assert usage.cache_creation_1h_input_tokens <= usage.cache_creation_input_tokens
    assert meter.model is None or isinstance(meter.model, str)


@given(st.data())
def test_any_prefix_of_a_stream_reports_no_more_than_the_whole(data: st.DataObject) -> None:
    parts = events("stream_tool_use.sse")
    cut = data.draw(st.integers(min_value=0, max_value=len(parts)))
    whole = metered(parts).usage
    partial = metered(parts[:cut])
    assert all(part <= total for part, total in zip(_counts(partial.usage), _counts(whole), strict=True))
    assert partial.complete == (cut >= len(parts))


def _counts(usage: TokenUsage) -> Iterator[int]:
    yield from (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_1h_input_tokens,
        usage.web_search_requests,
    )
