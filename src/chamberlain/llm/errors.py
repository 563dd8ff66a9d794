"""Errors in the Anthropic API's own format, so Claude Code and the SDKs show them (and retry where they should).

The envelope is `{"type": "error", "error": {"type": …, "message": …}}` with the status that goes with the type
(Anthropic's "Errors" page): 400 invalid_request_error, 401 authentication_error, 403 permission_error,
404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error, 504 timeout_error and
529 overloaded_error. The SDKs retry 408, 409, 429 and 5xx, honouring `retry-after`; `request-id` names the exchange.
"""

from __future__ import annotations

from typing import Literal

import orjson
from starlette.types import Send

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
]

STATUS_OF: dict[ErrorType, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_TYPE_OF_STATUS: dict[int, ErrorType] = {status: kind for kind, status in STATUS_OF.items()}
_JSON = (b"content-type", b"application/json")


def error_type_for(status: int) -> ErrorType:
    """The error type an Anthropic client expects with `status` (an upstream answer without a usable body)."""
    if status in _TYPE_OF_STATUS:
        return _TYPE_OF_STATUS[status]
    if status == 503:
        return "overloaded_error"
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(kind: ErrorType, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def error_event(kind: ErrorType, message: str) -> bytes:
    """The error as a stream event, for a failure after a streamed answer began (the API's own `event: error`)."""
    return b"event: error\ndata: " + error_body(kind, message) + b"\n\n"


def store_unavailable_body() -> bytes:
    """For a request that needed the gateway's store while it is down, sent with 503 and `retry-after` (the SDKs
    retry 5xx after it)."""
    return error_body(error_type_for(503), "the gateway is temporarily unavailable; retry later")


class LlmError(Exception):
    """A refusal or failure to answer in the Anthropic format. `message` is safe to show: no secrets, no content."""

    def __init__(
        self,
        kind: ErrorType,
        message: str,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        should_retry: bool | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status if status is not None else STATUS_OF[kind]
        self.retry_after = retry_after
        self.should_retry = should_retry  # x-should-retry: the Stainless SDKs' override of their status rule
        self.headers = headers

    async def send(self, send: Send, request_id: str | None) -> None:
        headers = [_JSON, *self.headers]
        if request_id is not None:
            headers.append((b"request-id", request_id.encode()))
        if self.retry_after is not None:
            headers.append((b"retry-after", b"%d" % self.retry_after))
        if self.should_retry is not None:
            headers.append((b"x-should-retry", b"true" if self.should_retry else b"false"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": error_body(self.kind, self.message)})
