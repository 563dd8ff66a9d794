"""Issue 9, acceptance 1 and 2: what the LLM proxy records and charges, through the real HTTP stack.

A stand-in replays Messages API answers written from Anthropic's wire format (tests/fixtures/anthropic/: a
non-streamed tool-use answer with 5-minute and 1-hour cache writes and cache reads; the same kind of answer as a
stream; the stream cut off). The costs below are worked out by hand from Anthropic's list prices for Claude Sonnet 4.5
(USD per million tokens: input 3, output 15, 5-minute cache write 3.75, 1-hour cache write 6, cache read 0.30) and
Claude Haiku 4.5 (input 1, output 5). Then: 50 concurrent requests against a budget with room for 10.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from chamberlain.cost.budgets import micros_up, usd
from chamberlain.cost.pricing import Pricing
from chamberlain.llm.messages import BYTES_PER_TOKEN
from chamberlain.store.usage import from_nano
from tests.conftest import require_postgres
from tests.support.anthropic_upstream import Answer
from tests.support.llm_gateway import LlmGateway, llm_gateway, new_request_id, store_api_keys, usage_of
from tests.support.server import postgres_database
from tests.support.tenants import access_token

MTOK = Decimal(1_000_000)
SONNET = {"input": Decimal(3), "output": Decimal(15), "write_5m": Decimal("3.75"), "write_1h": Decimal(6),
          "read": Decimal("0.30")}  # fmt: skip
REQUEST = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": [{"role": "user", "content": "Weather?"}]}
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]


def sonnet(*, input: int, output: int, write_5m: int = 0, write_1h: int = 0, read: int = 0) -> Decimal:
    tokens = {"input": input, "output": output, "write_5m": write_5m, "write_1h": write_1h, "read": read}
    return sum((Decimal(count) * SONNET[kind] for kind, count in tokens.items()), Decimal(0)) / MTOK


# message_tool_use.json: 2,095 input, 40,000 + 8,000 cache writes (5 min, 1 h), 125,000 cache reads, 1,503 output.
NON_STREAMED = sonnet(input=2095, output=1503, write_5m=40_000, write_1h=8000, read=125_000)
# stream_tool_use.sse: message_start says 3,120 input, 20,000 cache writes (5 min), 90,000 reads, 1 output so far;
# message_delta ends with 2,210 output.
STREAMED = sonnet(input=3120, output=2210, write_5m=20_000, read=90_000)
# Cut after message_start and four more events: only message_start's figures were reported.
CUT_OFF = sonnet(input=3120, output=1, write_5m=20_000, read=90_000)


def test_the_hand_computed_costs() -> None:
    # The arithmetic above, once more in plain numbers: the figures the proxy must reproduce to the cent.
    assert Decimal("0.264330") == NON_STREAMED
    assert Decimal("0.144510") == STREAMED
    assert Decimal("0.111375") == CUT_OFF


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    data_dir: Path = tmp_path_factory.mktemp(f"llm-accounting-{request.param}")
    if request.param == "sqlite":
        with llm_gateway(data_dir) as running:
            yield running
        return
    require_postgres()
    with postgres_database() as url, llm_gateway(data_dir, url) as running:
        yield running


@pytest.fixture(scope="module")
async def token(gateway: LlmGateway) -> str:
    await store_api_keys(gateway.server)
    return await access_token(gateway.server, gateway.server.settings.tenant, gateway.server.user, gateway.resource)


@pytest.fixture
async def http(gateway: LlmGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.server.base_url, timeout=30) as client:
        yield client


def headers(token: str, request_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01", "x-request-id": request_id}


def charged(record: dict[str, object]) -> Decimal:
    cost = record["cost_nanousd"]
    assert isinstance(cost, int)
    return from_nano(cost)


async def streamed(
    http: httpx.AsyncClient, token: str, request_id: str, body: dict[str, object]
) -> tuple[httpx.Response, bytes]:
    """Posts a streamed request and reads every byte relayed (the response's status and headers stay readable)."""
    async with http.stream("POST", "/v1/messages", json=body, headers=headers(token, request_id)) as response:
        return response, b"".join([chunk async for chunk in response.aiter_bytes()])


def replayed_stream(gateway: LlmGateway) -> bytes:
    """What the proxy relays of stream_tool_use.sse: the fixture, naming the model as the request did."""
    return gateway.upstream.fixture("stream_tool_use.sse").replace(b"claude-sonnet-4-5-20250929", b"claude-sonnet-4-5")


async def test_a_non_streamed_answer_is_charged_exactly(
    http: httpx.AsyncClient, gateway: LlmGateway, token: str
) -> None:
    request_id = new_request_id()
    response = await http.post("/v1/messages", json={**REQUEST, "tools": TOOLS}, headers=headers(token, request_id))
    assert response.status_code == 200, response.text
    assert response.json()["content"][1]["type"] == "tool_use"
    record = await usage_of(gateway.server, request_id)
    assert (record["input_tokens"], record["output_tokens"]) == (2095, 1503)
    assert (record["cache_creation_input_tokens"], record["cache_creation_1h_input_tokens"]) == (48_000, 8000)
    assert record["cache_read_input_tokens"] == 125_000
    assert charged(record) == NON_STREAMED
    assert round(charged(record), 2) == Decimal("0.26")
    assert record["complete"] is True
    assert record["source"] == "proxy"
    assert record["model"] == "claude-sonnet-4-5"
    assert record["requested_model"] is None  # nothing rewrote it
    assert record["user_id"] is not None
    assert record["client_id"] is not None
    assert record["latency_ms"] is not None
    assert record["latency_ms"] > 0


async def test_a_streamed_answer_is_relayed_whole_and_charged_exactly(
    http: httpx.AsyncClient, gateway: LlmGateway, token: str
) -> None:
    request_id = new_request_id()
    response, relayed = await streamed(http, token, request_id, {**REQUEST, "stream": True, "tools": TOOLS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert relayed == replayed_stream(gateway)  # every event, byte for byte
    record = await usage_of(gateway.server, request_id)
    assert (record["input_tokens"], record["output_tokens"]) == (3120, 2210)
    assert charged(record) == STREAMED
    assert round(charged(record), 2) == Decimal("0.14")
    assert record["complete"] is True


async def test_events_cut_across_the_upstreams_writes_are_relayed_whole_and_metered(
    http: httpx.AsyncClient, gateway: LlmGateway, token: str
) -> None:
    gateway.upstream.script.append(Answer(piece_size=37, event_delay=0.002))  # pieces arrive one by one
    request_id = new_request_id()
    _, relayed = await streamed(http, token, request_id, {**REQUEST, "stream": True})
    assert relayed == replayed_stream(gateway)
    record = await usage_of(gateway.server, request_id)
    assert charged(record) == STREAMED
    assert record["complete"] is True


async def test_a_stream_cut_off_upstream_is_charged_for_what_was_reported(
    http: httpx.AsyncClient, gateway: LlmGateway, token: str
) -> None:
    gateway.upstream.script.append(Answer(cut_after=5))
    request_id = new_request_id()
    response, relayed = await streamed(http, token, request_id, {**REQUEST, "stream": True})
    assert response.status_code == 200
    events = [event for event in relayed.split(b"\n\n") if event]
    assert events[0].startswith(b"event: message_start")
    # The five events that came, then the API's own error event so the client knows the answer is incomplete.
    assert len(events) == 6
    assert events[-1].startswith(b"event: error")
    assert orjson.loads(events[-1].split(b"data: ", 1)[1])["error"]["type"] == "api_error"
    record = await usage_of(gateway.server, request_id)
    assert (record["input_tokens"], record["output_tokens"]) == (3120, 1)
    assert charged(record) == CUT_OFF
    assert round(charged(record), 2) == Decimal("0.11")
    assert record["complete"] is False


async def test_a_stream_the_client_abandons_is_charged_for_what_was_relayed(
    http: httpx.AsyncClient, gateway: LlmGateway, token: str
) -> None:
    gateway.upstream.script.append(Answer(event_delay=0.3))
    abandoned = gateway.upstream.abandoned
    request_id = new_request_id()
    body = {**REQUEST, "stream": True}
    async with http.stream("POST", "/v1/messages", json=body, headers=headers(token, request_id)) as response:
        async for chunk in response.aiter_bytes():
            if b"message_start" in chunk:
                break  # leaving the block closes the connection in the middle of the stream
    assert await asyncio.to_thread(gateway.upstream.wait_for_abandoned, abandoned + 1)
    record = await usage_of(gateway.server, request_id)
    assert (record["input_tokens"], record["output_tokens"]) == (3120, 1)
    assert charged(record) == CUT_OFF
    assert record["complete"] is False


HAIKU_REQUEST = orjson.dumps({**REQUEST, "model": "claude-haiku-4-5", "max_tokens": 1024})


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    """A gateway whose users' monthly budget has room for ten estimates of HAIKU_REQUEST, and an upstream that
    takes a second to answer (so that requests overlap)."""
    estimate = Pricing.load().estimate(
        "claude-haiku-4-5", len(HAIKU_REQUEST) // BYTES_PER_TOKEN, 1024, at=datetime.now(UTC)
    )
    limit = usd(micros_up(estimate) * 10)
    budgets = [{"scope": "user", "period": "month", "limit_usd": str(limit), "alert_at": [1.0]}]
    with llm_gateway(tmp_path_factory.mktemp("llm-budget"), budgets=budgets) as running:
        running.upstream.default = Answer(fixture="message_text.json", delay=1.0)
        yield running


async def test_fifty_concurrent_requests_against_a_budget_for_ten(budgeted: LlmGateway) -> None:
    """Acceptance 2, through the proxy: fifty requests arrive at once; no more than ten (+1 for this one process)
    get an answer, the others a clear Anthropic-format refusal, and none of those reaches the upstream."""
    await store_api_keys(budgeted.server)
    token = await access_token(budgeted.server, budgeted.server.settings.tenant, "alice", budgeted.resource)
    async with httpx.AsyncClient(base_url=budgeted.server.base_url, timeout=60) as client:

        async def one() -> httpx.Response:
            request_headers = {**headers(token, new_request_id()), "content-type": "application/json"}
            return await client.post("/v1/messages", content=HAIKU_REQUEST, headers=request_headers)

        answers = await asyncio.gather(*(one() for _ in range(50)))
    statuses = sorted(response.status_code for response in answers)
    succeeded = statuses.count(200)
    assert 1 <= succeeded <= 10 + 1, statuses
    refused = [response for response in answers if response.status_code != 200]
    assert len(refused) == 50 - succeeded
    for response in refused:
        assert response.status_code in (400, 429), response.text
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] in ("invalid_request_error", "rate_limit_error")
        assert "retry-after" in response.headers
    assert len(budgeted.upstream.received) == succeeded  # refused requests never went upstream
