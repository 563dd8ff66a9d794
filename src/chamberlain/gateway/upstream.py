"""What the proxy asks of an upstream MCP server, whatever its transport (streamable HTTP or a stdio process).

The proxy speaks streamable HTTP to the client. It hands each client HTTP request (already authenticated, checked
against policy and stripped of the client's credentials) to the server's `Upstream` and relays the answer: either a
complete body or a stream of Server-Sent Events, one complete event per item, so the proxy can inspect or cut the
stream at event boundaries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from chamberlain.oauth.access_tokens import AccessTokenClaims

Headers = list[tuple[bytes, bytes]]  # lower-case names, as ASGI carries them


@dataclass
class UpstreamRequest:
    method: str  # "POST", "GET" (legacy standalone SSE stream) or "DELETE" (legacy session end)
    headers: Headers  # only MCP transport headers (content-type, accept, mcp-*, last-event-id); never authorization
    body: bytes
    principal: AccessTokenClaims  # who the gateway acts for: credentials are chosen per user and upstream
    session_id: str | None = None  # the upstream's own Mcp-Session-Id, already unwrapped by the proxy
    # A stream that may rightly stay quiet for hours (the legacy GET stream, 2026-07-28 subscriptions/listen):
    # no idle timeout applies to it.
    long_lived: bool = False


@dataclass
class UpstreamResponse:
    status: int
    headers: Headers  # content-type, mcp-session-id and other headers worth relaying
    body: bytes = b""  # the complete body when `events` is None
    events: AsyncIterator[bytes] | None = None  # SSE: each item one complete event, blank-line terminator included
    # Releases what the stream holds (a pooled connection) even when `events` was never iterated.
    release: Callable[[], Awaitable[None]] | None = None

    async def aclose(self) -> None:
        """Releases the stream, finished or not (the client went away or the proxy refused an event)."""
        if self.events is not None:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.release is not None:
            await self.release()


class UpstreamError(Exception):
    """The upstream could not give an answer: unreachable, too slow, broken or oversized.

    `reason` is safe to show to the client and to record: it never contains credentials or message contents.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "unavailable", "timeout", "protocol" or "too_large"
        self.reason = reason


class Upstream(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Relays one client HTTP request. Raises UpstreamError when no answer can be had in time."""
        ...

    async def aclose(self) -> None:
        """Stops processes and closes pooled connections."""
        ...
