"""A request id on every HTTP exchange: the caller's `X-Request-Id` when it is a plain token, else a new one.

It is echoed in the response and carried by the audit events the request causes, so a SIEM can correlate the
gateway's records with a load balancer's or a client's logs.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chamberlain.audit.events import new_event_id

HEADER = b"x-request-id"
_ACCEPTABLE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")  # anything else is replaced, never logged or echoed


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == HEADER), None)
        request_id = given.decode() if given is not None and _ACCEPTABLE.fullmatch(given) else new_event_id()
        scope.setdefault("state", {})["request_id"] = request_id
        echoed = (HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        await self._app(scope, receive, send_with_id)


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None
