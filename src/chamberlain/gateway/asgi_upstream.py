"""An upstream that is an ASGI application in this process: the built-in demo server.

It goes through the same proxy path as a remote server (policy, filtering, events), so the demo shows what the
gateway really does. The demo answers with plain JSON (stateless, json_response), so one body is all it sends.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message

from chamberlain.gateway.upstream import UpstreamError, UpstreamRequest, UpstreamResponse


class AsgiUpstream:
    def __init__(self, app: ASGIApp, path: str = "/mcp") -> None:
        self._app = app
        self._path = path

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": self._path,
            "raw_path": self._path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"localhost"), *request.headers],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 80),
        }
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}

        status, headers, body = 500, [], []

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        try:
            await self._app(scope, receive, send)
        except Exception:
            raise UpstreamError("protocol", "the built-in server failed to answer") from None
        return UpstreamResponse(
            status, [(k.lower(), v) for k, v in headers if k.lower() == b"content-type"], b"".join(body)
        )

    async def aclose(self) -> None:
        return None
