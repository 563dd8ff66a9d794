"""The official Python SDK client through the gateway to real upstreams: an SDK server over streamable HTTP and the
same server as a stdio process. The client signs in through Chamberlain's OAuth flow; tool calls, progress
notifications, elicitation and sampling requests from the server and cancellation all cross the proxy, in both
protocol eras."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from chamberlain.vault.leak_guard import MARKER
from tests.support.gateway import UPSTREAM_SECRET, gateway_with_upstreams
from tests.support.mcp_sdk import HeadlessAuthorizer, InMemoryTokenStorage, sdk_client
from tests.support.server import RunningServer

pytestmark = pytest.mark.interop

MODES = ["legacy", "2026-07-28"]
UPSTREAMS = ["up", "local"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with gateway_with_upstreams(tmp_path_factory.mktemp("sdk-gateway")) as running:
        yield running.server


def text_of(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


async def answer_sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    asked = params.messages[0].content
    text = asked.text if isinstance(asked, TextContent) else ""
    return types.CreateMessageResult(
        role="assistant", content=TextContent(type="text", text=f"model says: {text}"), model="stand-in"
    )


async def answer_elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


@pytest.mark.parametrize("server_name", UPSTREAMS)
@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client_lists_calls_streams_and_answers_through_the_gateway(
    gateway: RunningServer, mode: str, server_name: str
) -> None:
    storage, authorizer = InMemoryTokenStorage(), HeadlessAuthorizer(gateway)
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with sdk_client(
        gateway,
        storage,
        authorizer,
        mode=mode,
        server_name=server_name,
        elicitation_callback=answer_elicitation,
        sampling_callback=answer_sampling,
    ) as connection:
        client = connection.client
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"echo", "count", "ask_name"} <= names
        assert "delete_everything" not in names  # the developer role denies it on this server
        assert text_of(await client.call_tool("echo", {"text": "through"})) == "through"
        counted = await client.call_tool("count", {"n": 3, "delay": 0.05}, progress_callback=on_progress)
        assert text_of(counted) == "counted to 3"
        assert progress == [1, 2, 3]
        assert text_of(await client.call_tool("ask_name", {})) == "hello Ada"
        summarized = await client.call_tool("summarize", {"text": "the report"})
        assert text_of(summarized) == "model says: Summarise: the report"
        before = int(text_of(await client.call_tool("cancelled", {})))
        with anyio.move_on_after(0.5) as cancelled:
            await client.call_tool("sleep", {"seconds": 30})
        assert cancelled.cancelled_caught
        # The cancellation crossed the gateway: the upstream's sleep was cancelled, not left to run.
        for _ in range(200):
            if int(text_of(await client.call_tool("cancelled", {}))) > before:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("the upstream never saw the cancellation")
        with pytest.raises(MCPError, match="not permitted"):
            await client.call_tool("delete_everything", {})


@pytest.mark.parametrize("mode", MODES)
async def test_an_injected_credential_in_a_streamed_answer_reaches_the_sdk_client_redacted(
    gateway: RunningServer, mode: str
) -> None:
    storage, authorizer = InMemoryTokenStorage(), HeadlessAuthorizer(gateway)
    async with sdk_client(gateway, storage, authorizer, mode=mode, server_name="up-keyed") as connection:
        echoed = text_of(await connection.client.call_tool("whoami", {}))
        assert echoed == MARKER.decode()
        # The upstream did get the key: only its echo was redacted, on the way back through the SSE stream.
        received = bytes.fromhex(text_of(await connection.client.call_tool("whoami_hex", {}))).decode()
        assert received == "Bearer " + UPSTREAM_SECRET
