"""The demo MCP server behind /mcp/{server} until the gateway proxies real upstreams.

Built on the official MCP SDK, so protocol behaviour (the legacy revisions and 2026-07-28) is the SDK's own.
It runs stateless: sessions are never authentication, and no state survives between requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

from chamberlain import __version__

DEMO_SERVER_NAME = "demo"


def build_demo_server() -> MCPServer:
    # WARNING: the SDK logs every request at INFO, which costs more CPU than answering it.
    server = MCPServer(
        DEMO_SERVER_NAME, instructions="A demo MCP server behind Chamberlain.", version=__version__, log_level="WARNING"
    )

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return server


class DemoHandler:
    """ASGI handler that answers MCP requests with the demo server (stateless streamable HTTP)."""

    def __init__(self) -> None:
        # The gateway already checked the caller; the SDK's DNS-rebinding check is for servers bound directly to
        # loopback and would refuse the public Host a deployment uses, so Origin is checked by the gateway instead.
        self._manager = StreamableHTTPSessionManager(
            app=build_demo_server()._lowlevel_server,
            stateless=True,
            json_response=True,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self._manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._manager.handle_request(scope, receive, send)
