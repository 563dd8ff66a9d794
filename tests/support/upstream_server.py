"""The upstream MCP server the gateway's tests put behind `/mcp/{server}`, built on the official SDK.

    python -m tests.support.upstream_server --stdio
    python -m tests.support.upstream_server --http --port N [--stateless] [--json-response] [--garbage]

Its tools cover what a proxy must carry: plain calls (echo, add), progress (count), a server-to-client question
(ask_name: elicitation mid-call on the legacy revisions, an InputRequiredResult round trip on 2026-07-28), hangs for
timeouts and cancellation (sleep), a dying process (crash), large answers (big), the credential the upstream saw
(whoami) and a tool policy is meant to deny (delete_everything). `--garbage` answers every POST with broken JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Annotated

import uvicorn
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, MCPServer, Resolve, Sample
from mcp_types import CreateMessageResult, SamplingMessage, TextContent
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

SERVER_NAME = "upstream"
RESOURCE_URI = "test://readme"
GARBAGE = b"not json{"
SLEEP_CANCELLED = "sleep cancelled"


class Name(BaseModel):
    name: str


def ask_for_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def ask_for_summary(text: str) -> Sample:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=f"Summarise: {text}"))
    return Sample([message], max_tokens=50)


def build_server() -> MCPServer:
    server = MCPServer(SERVER_NAME, version="1.0", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    async def count(n: int, delay: float, ctx: Context) -> str:
        """Report progress n times, `delay` seconds apart."""
        for step in range(1, n + 1):
            await asyncio.sleep(delay)
            await ctx.report_progress(step, n, f"step {step}")
        return f"counted to {n}"

    @server.tool()
    def summarize(text: str, summary: Annotated[CreateMessageResult, Resolve(ask_for_summary)]) -> str:
        """Ask the client's model for a summary (sampling, mid-call or as an input round trip by revision)."""
        content = summary.content
        return content.text if isinstance(content, TextContent) else "no text"

    @server.tool()
    def ask_name(answer: Annotated[ElicitationResult[Name], Resolve(ask_for_name)]) -> str:
        """Ask the user for their name (the SDK picks elicitation or an input round trip by revision)."""
        if answer.action == "accept":
            return f"hello {answer.data.name}"
        return answer.action

    cancelled_sleeps = 0

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Hang for `seconds` (timeouts and cancellation); says on stderr when it was cancelled."""
        nonlocal cancelled_sleeps
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled_sleeps += 1
            print(SLEEP_CANCELLED, file=sys.stderr, flush=True)
            raise
        return "slept"

    @server.tool()
    def cancelled() -> int:
        """How many sleep calls this process saw cancelled: what proves a cancellation arrived."""
        return cancelled_sleeps

    @server.tool()
    def crash() -> str:
        """Kill this process without answering."""
        os._exit(3)

    @server.tool()
    def big(size: int) -> str:
        """A text of `size` bytes."""
        return "x" * size

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The Authorization header this HTTP request carried ("none"), or "stdio" over stdio."""
        headers = ctx.headers
        if headers is None:
            return "stdio"
        return headers.get("authorization", "none")

    @server.tool()
    def whoami_hex(ctx: Context) -> str:
        """`whoami` in hexadecimal: the leak guard redacts an injected credential echoed as it is (or in base64,
        percent- or JSON-escaped), so tests that need to see what the upstream received ask for this form."""
        return whoami(ctx).encode("latin-1").hex()

    @server.tool()
    def delete_everything() -> str:
        """A tool policy exists to deny."""
        return "everything deleted"

    @server.prompt()
    def greeting(name: str) -> str:
        """A greeting prompt."""
        return f"Say hello to {name}."

    @server.resource(RESOURCE_URI)
    def readme() -> str:
        """A small text resource."""
        return "This is the test upstream."

    return server


async def garbage_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every HTTP request with a 200 whose JSON body is broken."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": GARBAGE})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true")
    mode.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--garbage", action="store_true")
    args = parser.parse_args(argv)
    server = build_server()
    if args.stdio:
        server.run("stdio")
        return
    app = (
        garbage_app
        if args.garbage
        else server.streamable_http_app(
            stateless_http=args.stateless, json_response=args.json_response, host="127.0.0.1"
        )
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="auto")


if __name__ == "__main__":
    main()
