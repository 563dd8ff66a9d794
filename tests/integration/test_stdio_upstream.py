"""StdioUpstream with real processes of the test upstream: the proxy's view of a stdio server as streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

from chamberlain.gateway.server_config import ServerConfig
from chamberlain.gateway.sse import event_data
from chamberlain.gateway.stdio_upstream import StdioUpstream
from chamberlain.gateway.upstream import UpstreamError, UpstreamRequest, UpstreamResponse
from chamberlain.oauth.access_tokens import AccessTokenClaims
from tests.support.upstream_server import SLEEP_CANCELLED
from tests.support.upstreams import http_upstream, stdio_server_config

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
BOTH = b"application/json, text/event-stream"
WAIT = 15.0  # seconds a test waits for something that happens in the background before it fails

PRINCIPAL = AccessTokenClaims(
    subject="alice",
    client_id="test-client",
    audience=("http://127.0.0.1/mcp/upstream",),
    scopes=frozenset({"mcp:tools"}),
    expires_at=int(time.time()) + 600,
    issued_at=int(time.time()),
    jti="jti-1",
    grant_id=None,
    tenant="default",
    auth_time=None,
    roles=("developer",),
    raw={},
)


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[StdioUpstream]:
    """Shared by the module's tests (a process takes about a second to start): each legacy session still has its
    own process; the 2026-07-28 tests share one, as clients do."""
    stdio = StdioUpstream("upstream", stdio_server_config())
    yield stdio
    await stdio.aclose()


@pytest.fixture
async def own_upstream() -> AsyncIterator[StdioUpstream]:
    """For tests that crash processes: the back-off they cause stays theirs."""
    stdio = StdioUpstream("upstream", stdio_server_config())
    yield stdio
    await stdio.aclose()


# -- helpers ------------------------------------------------------------------------------------------------------


async def post(
    upstream: StdioUpstream,
    message: dict[str, Any],
    session: str | None = None,
    *,
    accept: bytes = BOTH,
    version: str = LEGACY,
) -> UpstreamResponse:
    headers = [(b"content-type", b"application/json"), (b"accept", accept), (b"mcp-protocol-version", version.encode())]
    return await upstream.send(UpstreamRequest("POST", headers, json.dumps(message).encode(), PRINCIPAL, session))


async def messages(response: UpstreamResponse) -> list[dict[str, Any]]:
    """Every message of a response: the JSON body, or each SSE event's data."""
    if response.events is None:
        return [json.loads(response.body)] if response.body else []
    return [json.loads(data) async for event in response.events if (data := event_data(event)) is not None]


async def next_message(response: UpstreamResponse) -> dict[str, Any]:
    assert response.events is not None
    data = event_data(await anext(response.events))
    assert data is not None
    return dict(json.loads(data))


async def open_session(upstream: StdioUpstream) -> str:
    initialize = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {"elicitation": {}},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    response = await post(upstream, initialize)
    assert response.status == 200
    session = dict(response.headers)[b"mcp-session-id"].decode()
    answered = await post(upstream, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert answered.status == 202
    return session


def call(request_id: int | str, tool: str, progress_token: str | None = None, **arguments: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if progress_token is not None:
        params["_meta"] = {"progressToken": progress_token}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def modern_call(
    request_id: int | str, tool: str, progress_token: str | None = None, **arguments: Any
) -> dict[str, Any]:
    """A 2026-07-28 request: no session, the protocol envelope in `_meta`."""
    message = call(request_id, tool, progress_token, **arguments)
    message["params"].setdefault("_meta", {}).update(
        {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        }
    )
    return message


def text_of(response: dict[str, Any]) -> str:
    return str(response["result"]["content"][0]["text"])


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Waits until the stdio logger has recorded a line containing `text`."""
    deadline = time.monotonic() + WAIT
    while not any(
        text in record.getMessage() for record in caplog.records if record.name == "chamberlain.gateway.stdio"
    ):
        assert time.monotonic() < deadline, f"never logged: {text}"
        await asyncio.sleep(0.05)


def upstream_children() -> list[int]:
    """Processes of the test upstream this test process started and that are still alive (not zombies)."""
    children = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"upstream_server" in cmdline:
            children.append(int(entry.name))
    return children


# -- legacy sessions ------------------------------------------------------------------------------------------


async def test_a_session_lists_and_calls_tools(upstream: StdioUpstream) -> None:
    session = await open_session(upstream)
    assert len(session) >= 43  # 256 bits, base64url

    listed = await messages(await post(upstream, {"jsonrpc": "2.0", "id": "list", "method": "tools/list"}, session))
    assert listed[-1]["id"] == "list"
    names = {tool["name"] for tool in listed[-1]["result"]["tools"]}
    assert {"echo", "add", "count", "ask_name", "sleep", "crash", "big", "whoami", "delete_everything"} <= names

    answered = await messages(await post(upstream, call(7, "add", a=2, b=3), session))
    assert answered[-1]["id"] == 7
    assert text_of(answered[-1]) == "5"
    json_only = await post(upstream, call(8, "whoami"), session, accept=b"application/json")
    assert json_only.events is None
    assert json.loads(json_only.body)["id"] == 8
    assert text_of(json.loads(json_only.body)) == "stdio"


async def test_progress_arrives_on_the_request_stream_before_the_response(upstream: StdioUpstream) -> None:
    session = await open_session(upstream)
    stream = await messages(await post(upstream, call(1, "count", "my-token", n=3, delay=0.01), session))
    assert [message.get("method") for message in stream] == ["notifications/progress"] * 3 + [None]
    assert [message["params"]["progressToken"] for message in stream[:3]] == ["my-token"] * 3  # the client's token
    assert [message["params"]["progress"] for message in stream[:3]] == [1, 2, 3]
    assert stream[-1]["id"] == 1
    assert text_of(stream[-1]) == "counted to 3"


async def test_an_elicitation_goes_out_on_the_call_stream_and_the_answer_completes_the_call(
    upstream: StdioUpstream,
) -> None:
    session = await open_session(upstream)
    response = await post(upstream, call(1, "ask_name"), session)
    question = await next_message(response)
    assert question["method"] == "elicitation/create"

    answer = {"jsonrpc": "2.0", "id": question["id"], "result": {"action": "accept", "content": {"name": "Ada"}}}
    assert (await post(upstream, answer, session)).status == 202
    final = await messages(response)
    assert final[-1]["id"] == 1
    assert text_of(final[-1]) == "hello Ada"


async def test_the_clients_cancellation_stops_the_call_and_stderr_is_logged(
    upstream: StdioUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "chamberlain.gateway.stdio")
    session = await open_session(upstream)
    await post(upstream, call("slow", "sleep", seconds=60), session)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow"}}
    assert (await post(upstream, cancel, session)).status == 202
    # The tool saw the cancellation (under the id the process knows) and said so on stderr, which reached the log.
    await logged(caplog, SLEEP_CANCELLED)
    assert (
        text_of((await messages(await post(upstream, call(2, "echo", text="still here"), session)))[-1]) == "still here"
    )


async def test_a_crash_mid_call_is_a_clean_error_and_the_session_goes_on(own_upstream: StdioUpstream) -> None:
    upstream = own_upstream
    session = await open_session(upstream)
    with pytest.raises(UpstreamError) as failure:
        await messages(await post(upstream, call(1, "crash"), session))
    assert failure.value.kind == "unavailable"

    # The process is restarted and the session's handshake replayed: the same session id keeps working.
    answered = await messages(await post(upstream, call(2, "echo", text="back"), session))
    assert answered[-1]["id"] == 2
    assert text_of(answered[-1]) == "back"
    other = await open_session(upstream)
    assert text_of((await messages(await post(upstream, call(3, "add", a=1, b=1), other)))[-1]) == "2"


async def test_sessions_are_isolated(own_upstream: StdioUpstream) -> None:
    upstream = own_upstream
    first, second = await asyncio.gather(open_session(upstream), open_session(upstream))
    assert first != second
    running = await post(upstream, call(1, "count", "t", n=2, delay=0.2), second)
    with pytest.raises(UpstreamError):
        await messages(await post(upstream, call(1, "crash"), first))
    stream = await messages(running)  # the other session's process never noticed
    assert text_of(stream[-1]) == "counted to 2"

    assert (await upstream.send(UpstreamRequest("DELETE", [], b"", PRINCIPAL, first))).status == 200
    gone = await post(upstream, call(2, "echo", text="x"), first)
    assert gone.status == 404
    assert text_of((await messages(await post(upstream, call(2, "echo", text="y"), second)))[-1]) == "y"


async def test_an_unknown_session_is_404_and_no_session_is_400(upstream: StdioUpstream) -> None:
    unknown = await post(upstream, call(1, "echo", text="x"), "made-up-session")
    assert unknown.status == 404
    assert json.loads(unknown.body)["id"] == 1
    assert (
        await upstream.send(UpstreamRequest("GET", [(b"accept", b"text/event-stream")], b"", PRINCIPAL, "nope"))
    ).status == 404
    assert (await post(upstream, call(1, "echo", text="x"))).status == 400


async def test_messages_tied_to_no_request_go_on_the_get_stream(upstream: StdioUpstream) -> None:
    session = await open_session(upstream)
    get = UpstreamRequest("GET", [(b"accept", b"text/event-stream")], b"", PRINCIPAL, session)
    standalone = await upstream.send(get)
    assert standalone.status == 200
    assert standalone.events is not None
    assert (await upstream.send(get)).status == 409  # one GET stream per session

    # Two requests in flight: the elicitation cannot be attributed, so it takes the GET stream.
    waiting = await post(upstream, call(1, "sleep", seconds=0.5), session)
    asking = await post(upstream, call(2, "ask_name"), session)
    question = await next_message(standalone)
    assert question["method"] == "elicitation/create"
    await post(upstream, {"jsonrpc": "2.0", "id": question["id"], "result": {"action": "decline"}}, session)
    assert text_of((await messages(asking))[-1]) == "decline"
    assert text_of((await messages(waiting))[-1]) == "slept"
    await standalone.aclose()


# -- failures and limits ---------------------------------------------------------------------------------------


async def test_an_oversized_message_is_refused_and_the_next_call_works() -> None:
    stdio = StdioUpstream("upstream", stdio_server_config(max_message_bytes=4096))
    try:
        session = await open_session(stdio)
        with pytest.raises(UpstreamError) as failure:
            await messages(await post(stdio, call(1, "big", size=100_000), session))
        assert failure.value.kind == "too_large"
        assert text_of((await messages(await post(stdio, call(2, "big", size=100), session)))[-1]) == "x" * 100
    finally:
        await stdio.aclose()


async def test_no_answer_in_time_is_a_timeout_and_the_call_is_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chamberlain.gateway.stdio")
    stdio = StdioUpstream("upstream", stdio_server_config(timeout=3.0))
    try:
        session = await open_session(stdio)
        with pytest.raises(UpstreamError) as failure:
            await messages(await post(stdio, call(1, "sleep", seconds=60), session))
        assert failure.value.kind == "timeout"
        await logged(caplog, SLEEP_CANCELLED)
    finally:
        await stdio.aclose()


async def test_processes_get_a_minimal_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "chamberlain.gateway.stdio")
    monkeypatch.setenv("CHAMBERLAIN_MASTER_KEY", "gateway-secret")
    show_env = "import os, sys; print('env:', sorted(os.environ), file=sys.stderr)"
    stdio = StdioUpstream("printenv", ServerConfig(command=(sys.executable, "-c", show_env), env={"CONFIGURED": "1"}))
    try:
        with pytest.raises(UpstreamError):  # the command is no MCP server: it exits without answering
            await open_session(stdio)
        await logged(caplog, "env: [")
        line = next(record.getMessage() for record in caplog.records if "env: [" in record.getMessage())
        assert "CONFIGURED" in line
        assert "PATH" in line
        assert "CHAMBERLAIN_MASTER_KEY" not in line
        assert "gateway-secret" not in line
    finally:
        await stdio.aclose()


async def test_a_crash_looping_command_backs_off_instead_of_spinning() -> None:
    stdio = StdioUpstream("dies", ServerConfig(command=(sys.executable, "-c", "pass"), timeout=0.2))
    try:
        with pytest.raises(UpstreamError) as first:
            await open_session(stdio)
        assert "exited" in first.value.reason
        with pytest.raises(UpstreamError) as second:  # within the back-off: refused without starting a process
            await open_session(stdio)
        assert second.value.kind == "unavailable"
        assert "restarting" in second.value.reason
    finally:
        await stdio.aclose()


async def test_a_missing_command_is_unavailable() -> None:
    stdio = StdioUpstream("missing", ServerConfig(command=("/nonexistent/mcp-server",)))
    try:
        with pytest.raises(UpstreamError) as failure:
            await open_session(stdio)
        assert failure.value.kind == "unavailable"
    finally:
        await stdio.aclose()


async def test_aclose_leaves_no_process() -> None:
    others = set(upstream_children())  # the module's shared upstream runs alongside
    stdio = StdioUpstream("upstream", stdio_server_config())
    first, _ = await asyncio.gather(open_session(stdio), open_session(stdio))
    await asyncio.gather(
        post(stdio, call(1, "sleep", seconds=60), first),
        messages(await post(stdio, modern_call(1, "echo", text="x"), version=MODERN)),
    )
    started = set(upstream_children()) - others
    assert len(started) == 3
    await stdio.aclose()
    assert started.isdisjoint(upstream_children())
    with pytest.raises(UpstreamError):
        await open_session(stdio)


# -- 2026-07-28: no sessions, one shared process ---------------------------------------------------------------


async def test_modern_requests_share_a_process_without_colliding(upstream: StdioUpstream) -> None:
    # Two clients use the same request id and progress token at the same time.
    first, second = await asyncio.gather(
        post(upstream, modern_call(1, "count", "token", n=2, delay=0.05), version=MODERN),
        post(upstream, modern_call(1, "echo", "token", text="second"), version=MODERN),
    )
    assert first.headers
    assert b"mcp-session-id" not in dict(first.headers)
    first_stream, second_stream = await asyncio.gather(messages(first), messages(second))
    assert [message["params"]["progressToken"] for message in first_stream[:-1]] == ["token", "token"]
    assert first_stream[-1]["id"] == 1
    assert text_of(first_stream[-1]) == "counted to 2"
    assert second_stream == [second_stream[-1]]
    assert text_of(second_stream[-1]) == "second"


async def test_modern_elicitation_is_an_input_required_result(upstream: StdioUpstream) -> None:
    answered = await messages(await post(upstream, modern_call(1, "ask_name"), version=MODERN))
    result = answered[-1]["result"]
    assert result["resultType"] == "input_required"
    assert [request["method"] for request in result["inputRequests"].values()] == ["elicitation/create"]


async def test_closing_a_modern_stream_cancels_the_call(
    upstream: StdioUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "chamberlain.gateway.stdio")
    response = await post(upstream, modern_call(1, "sleep", seconds=60), version=MODERN)
    reading = asyncio.ensure_future(messages(response))
    await asyncio.sleep(0.2)  # let the request reach the process (the test asserts no timing)
    reading.cancel()  # what the proxy does when its client goes away
    with pytest.raises(asyncio.CancelledError):
        await reading
    await response.aclose()
    await logged(caplog, SLEEP_CANCELLED)
    assert (
        text_of((await messages(await post(upstream, modern_call(2, "echo", text="ok"), version=MODERN)))[-1]) == "ok"
    )


async def test_modern_get_and_delete_are_not_allowed(upstream: StdioUpstream) -> None:
    for method in ("GET", "DELETE"):
        assert (await upstream.send(UpstreamRequest(method, [], b"", PRINCIPAL))).status == 405


# -- the HTTP mode of the test upstream --------------------------------------------------------------------------


async def test_the_http_upstream_helper_serves_the_sdk_client() -> None:
    with http_upstream() as running:
        async with Client(running.url) as client:
            tools = await client.list_tools()
            assert "whoami" in {tool.name for tool in tools.tools}
