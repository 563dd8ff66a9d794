"""Upstream MCP servers reached over streamable HTTP, through a pool of keep-alive connections.

The proxy's hot path runs through here, so it uses the lean HTTP/1.1 client in net/http1.py (measured: a sixth of
httpx's CPU per request). The client's token never comes here: the upstream gets its own credential.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import certifi

from chamberlain.gateway.server_config import ServerConfig
from chamberlain.gateway.sse import EventTooLarge, split_events
from chamberlain.gateway.upstream import UpstreamError, UpstreamRequest, UpstreamResponse
from chamberlain.gateway.upstream_credentials import UpstreamCredentials
from chamberlain.net.http1 import (
    BodyTooLarge,
    ConnectFailed,
    Http1Pool,
    Http1Response,
    ProtocolFailure,
    ResponseTimeout,
)

# Response headers worth relaying to the client; hop-by-hop and upstream-identifying headers stay here.
_RELAYED = frozenset({b"content-type", b"mcp-session-id", b"mcp-protocol-version", b"cache-control"})


class HttpUpstream:
    def __init__(self, name: str, config: ServerConfig, credentials: UpstreamCredentials) -> None:
        assert config.url is not None
        parts = urlsplit(config.url)
        self._name = name
        self._config = config
        self._credentials = credentials
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        tls = ssl.create_default_context(cafile=certifi.where()) if parts.scheme == "https" else None
        # Idle connections are dropped before a typical upstream's keep-alive (uvicorn: 5 s) would drop them, so a
        # POST seldom meets a connection the upstream is closing (POSTs are never retried: a tool may have run).
        self._pool = Http1Pool(f"{parts.scheme}://{parts.netloc}", ssl_context=tls, idle_timeout=4.0)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        config = self._config
        headers = request.headers + await self._credentials.headers(request.principal)
        if request.session_id is not None:
            headers.append((b"mcp-session-id", request.session_id.encode()))
        with self._failures():
            response = await self._pool.request(
                request.method, self._target, headers, request.body, timeout=config.timeout
            )
        relayed = [(name, value) for name, value in response.headers if name in _RELAYED]
        if _header(response, b"content-type").startswith(b"text/event-stream"):
            # A request's stream must keep moving; a subscription stream may rightly stay quiet for hours.
            idle = None if request.long_lived else config.timeout
            events = self._events(response, idle)
            return UpstreamResponse(response.status, relayed, events=events, release=response.aclose)
        with self._failures():
            body = await response.read(config.max_message_bytes, timeout=config.timeout)
        return UpstreamResponse(response.status, relayed, body=body)

    async def _events(self, response: Http1Response, idle_timeout: float | None) -> AsyncIterator[bytes]:
        try:
            with self._failures():
                chunks = response.chunks(idle_timeout=idle_timeout)
                async for event in split_events(chunks, self._config.max_message_bytes):
                    yield event
        finally:
            await response.aclose()

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """Turns the HTTP client's failures into UpstreamErrors that are safe to show the client."""
        name = self._name
        try:
            yield
        except ConnectFailed:
            raise UpstreamError("unavailable", f"the upstream server '{name}' is not reachable") from None
        except ResponseTimeout:
            raise UpstreamError("timeout", f"the upstream server '{name}' did not answer in time") from None
        except (BodyTooLarge, EventTooLarge):
            raise UpstreamError("too_large", f"the answer of '{name}' exceeds the message size limit") from None
        except ProtocolFailure:
            raise UpstreamError("protocol", f"the upstream server '{name}' sent a broken answer") from None
        except ValueError:  # a header the HTTP client refuses to send (it never names the value)
            raise UpstreamError("protocol", f"a request header could not be sent to '{name}'") from None

    async def aclose(self) -> None:
        await self._pool.aclose()
        await self._credentials.aclose()


def _header(response: Http1Response, name: bytes) -> bytes:
    for key, value in response.headers:
        if key == name:
            return value.lower()
    return b""
