"""Upstream MCP servers for the data protection tests, built on the official SDK.

    python -m tests.support.dlp_upstream --http --port N --record FILE
    python -m tests.support.dlp_upstream --http --port N --split-stream

One process serves two kinds of tool: an internal knowledge base (`search`: a result list mixing items of every
level, labelled the ways real sources label them; `read_report`: a confidential document carrying no label, which
the classification rules recognise) and an external web search (`web_search`), which appends the arguments it
receives to FILE, one JSON line per call, so a test can prove that nothing reached it.

`--split-stream` serves instead a raw upstream that answers every POST with an SSE stream whose one message holds a
card number cut across network writes and across two `data:` lines (which SSE joins with a line feed), the way a
value arrives split between chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, EmbeddedResource, TextResourceContents
from starlette.types import ASGIApp, Receive, Scope, Send

# The knowledge base: (uri, text, where the level comes from). The confidential item has no label: the tenant's
# classification rules recognise "customer_data"; the others carry a label as SharePoint (Purview) or a plain
# `classification` field would.
ITEMS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "kb://handbook/holidays",
        "Office holidays for 2027 are listed on the intranet home page.",
        {"classification": "public"},
    ),
    ("kb://wiki/oncall", "The on-call rotation changes every Monday at nine.", {"sensitivityLabel": "General"}),
    ("kb://crm/accounts", "customer_data: Acme renews in March; churn risk is high.", {}),
    (
        "kb://board/acquisition",
        "Project Falcon: the board approved the acquisition of Initech for 40 million.",
        {"sensitivityLabel": {"displayName": "Highly Confidential", "labelId": "c0ffee"}},
    ),
)
REPORT = (
    "customer_data quarterly review: Globex spent 1.2 million with us this year and plans to double its order "
    "volume before the summer, according to their purchasing director."
)


def build_server(record: Path) -> MCPServer:
    server = MCPServer("knowledge", version="1.0", log_level="WARNING")

    @server.tool()
    def search(query: str) -> CallToolResult:
        """Search the knowledge base."""
        content = [
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(uri=uri, text=text, mime_type="text/plain", _meta=meta or None),
            )
            for uri, text, meta in ITEMS
        ]
        results = [{"uri": uri, "snippet": text[:40], **meta} for uri, text, meta in ITEMS]
        return CallToolResult(content=list(content), structured_content={"query": query, "results": results})

    @server.tool()
    def read_report(name: str) -> str:
        """Read a report from the CRM."""
        return REPORT

    @server.tool()
    def web_search(query: str) -> str:
        """Search the public web (an external service)."""
        with record.open("a") as file:
            file.write(json.dumps({"query": query}) + "\n")
        return f"3 results for {query!r}"

    return server


SPLIT_CARD = "4111 1111 1111 1111"


async def split_stream(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers any request with one SSE message cut across two data lines (between JSON tokens, where the line feed
    SSE puts back is whitespace) and across network writes (inside the card's digits)."""
    if scope["type"] != "http":
        return
    request = json.loads(await _body(receive))
    result = {"content": [{"type": "text", "text": f"card on file: {SPLIT_CARD}, thanks"}]}
    message = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
    line_break = message.index(b'"result":') + len(b'"result":')
    cut = message.index(b"1111 1111") + 2
    event = b"event: message\ndata: " + message[:line_break] + b"\ndata: " + message[line_break:] + b"\n\n"
    cut += len(event) - len(message) - 2  # the same place in the event
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for chunk in (event[:cut], event[cut:]):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(0.02)  # separate writes
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path)
    mode.add_argument("--split-stream", action="store_true")
    args = parser.parse_args(argv)
    app: ASGIApp = split_stream
    if args.record is not None:
        app = build_server(args.record).streamable_http_app(stateless_http=True, json_response=True, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="auto")


if __name__ == "__main__":
    main()
