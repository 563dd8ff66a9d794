"""Plain MCP requests over HTTP to a gateway's protected resource (`/mcp/{server}`), for tests that check what the
resource accepts; the official SDK client is driven by `tests.support.mcp_sdk`."""

from __future__ import annotations

from typing import Any

import httpx

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
TOOLS_LIST: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


async def call_mcp(
    http: httpx.AsyncClient, token: str | None, *, server_name: str = "demo", query: str = ""
) -> httpx.Response:
    """POSTs a JSON-RPC tools/list to /mcp/{server_name}{query}, with `token` as a Bearer token when it is given."""
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await http.post(f"/mcp/{server_name}{query}", json=TOOLS_LIST, headers=headers)
