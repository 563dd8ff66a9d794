"""The JSON-RPC 2.0 envelope of MCP messages, as far as the gateway needs to look inside them.

The proxy reads a client's message to decide on it (which method, which tool) and relays the original bytes;
it never re-encodes what it does not change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from chamberlain.policy.roles import Kind

# JSON-RPC 2.0 §5.1 error codes, and MCP's own.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603
HEADER_MISMATCH = -32020  # MCP 2026-07-28, streamable HTTP "Server Validation"
# Codes from -32000 to -32099 are reserved for implementation-defined server errors (JSON-RPC 2.0 §5.1).
NOT_PERMITTED = -32001
UPSTREAM_FAILED = -32002
SESSION_NOT_FOUND = -32003
AUDIT_UNAVAILABLE = -32004
RATE_LIMITED = -32005  # with HTTP 429 and Retry-After (or 503 when the limiter's store is down and fails closed)
STORE_UNAVAILABLE = -32006  # with HTTP 503 and Retry-After: the gateway's own store cannot be reached

RequestId = str | int


class InvalidMessage(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ClientMessage:
    kind: Literal["request", "notification", "response"]
    id: RequestId | None
    method: str | None
    params: dict[str, Any] | None


# The MCP methods that name one tool, prompt or resource, and the kind of thing named (for policy).
NAMED_TARGETS: dict[str, tuple[Kind, str]] = {
    "tools/call": ("tools", "name"),
    "prompts/get": ("prompts", "name"),
    "resources/read": ("resources", "uri"),
    "resources/subscribe": ("resources", "uri"),
    "resources/unsubscribe": ("resources", "uri"),
}


def parse_client_document(body: bytes) -> tuple[Any, list[ClientMessage], bool]:
    """The decoded body, its messages (whose params are the document's own objects: a change to them is a change
    to the document) and whether it was a batch. Raises InvalidMessage."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidMessage(PARSE_ERROR, "the body is not valid JSON") from None
    if isinstance(document, list):
        if not document:
            raise InvalidMessage(INVALID_REQUEST, "an empty batch is not a valid request")  # JSON-RPC 2.0 §6
        return document, [_message(item) for item in document], True
    return document, [_message(document)], False


def _message(item: object) -> ClientMessage:
    if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
        raise InvalidMessage(INVALID_REQUEST, "not a JSON-RPC 2.0 message")
    method = item.get("method")
    params = item.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidMessage(INVALID_REQUEST, "MCP params must be an object")
    if method is None:
        if "result" not in item and "error" not in item:
            raise InvalidMessage(INVALID_REQUEST, "a message needs a method, a result or an error")
        return ClientMessage("response", _request_id(item.get("id"), allow_none=True), None, None)
    if not isinstance(method, str):
        raise InvalidMessage(INVALID_REQUEST, "method must be a string")
    if "id" not in item:
        return ClientMessage("notification", None, method, params)
    return ClientMessage("request", _request_id(item["id"], allow_none=False), method, params)


def _request_id(value: object, *, allow_none: bool) -> RequestId | None:
    # MCP basic protocol: request ids are strings or integers, never null.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if value is None and allow_none:
        return None
    raise InvalidMessage(INVALID_REQUEST, "the id must be a string or an integer")


def target_name(message: ClientMessage) -> tuple[Kind, str] | None:
    """For tools/call, prompts/get and resources/*: the kind and name policy decides on. Raises InvalidMessage."""
    target = NAMED_TARGETS.get(message.method or "")
    if target is None or message.kind != "request":
        return None
    kind, field = target
    name = (message.params or {}).get(field)
    if not isinstance(name, str):
        raise InvalidMessage(INVALID_REQUEST, f"{message.method} needs params.{field} as a string")
    return kind, name


def error_response(request_id: RequestId | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def store_unavailable_body(request_id: RequestId | None = None) -> bytes:
    """The JSON-RPC error for a request that needed the gateway's store while it is down. The id is null when the
    request could not be read back (JSON-RPC 2.0 §5: null when the id could not be determined)."""
    return encode(error_response(request_id, STORE_UNAVAILABLE, "the gateway is temporarily unavailable; retry later"))


def encode(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
