"""MCP 2026-07-28 request metadata headers: `Mcp-Method` and `Mcp-Name` must match the body.

Streamable HTTP 2026-07-28, "Request Metadata" and "Server Validation": intermediaries may route or decide on the
headers, so a request whose headers disagree with its body is refused with 400 and error -32020 (HeaderMismatch)
before anything else looks at it.
"""

from __future__ import annotations

import base64
import binascii

from chamberlain.gateway.jsonrpc import ClientMessage

MODERN_REVISION = "2026-07-28"  # the first revision that mirrors the body into headers
_NAME_FIELDS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
_SENTINEL_PREFIX, _SENTINEL_SUFFIX = "=?base64?", "?="
_PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"


def requires_metadata(protocol_version: str | None) -> bool:
    # Revisions are dates, so they compare as strings; a later revision keeps the rule.
    return protocol_version is not None and protocol_version >= MODERN_REVISION


def mismatch(
    message: ClientMessage, protocol_version: str, method_header: str | None, name_header: str | None
) -> str | None:
    """Why the headers disagree with the body, or None when they agree. Only requests are checked: the
    revision defines no header requirements for notification POSTs."""
    if message.kind != "request":
        return None
    if method_header is None:
        return "the Mcp-Method header is required"
    if method_header != message.method:
        return "the Mcp-Method header does not match the body's method"
    params = message.params or {}
    meta = params.get("_meta")
    if isinstance(meta, dict) and _PROTOCOL_VERSION_META in meta and meta[_PROTOCOL_VERSION_META] != protocol_version:
        return "the MCP-Protocol-Version header does not match the body's _meta"
    field = _NAME_FIELDS.get(method_header)
    if field is None:
        return None
    if name_header is None:
        return "the Mcp-Name header is required for " + method_header
    decoded = decode_header_value(name_header)
    if decoded is None:
        return "the Mcp-Name header is malformed"
    if decoded != params.get(field):
        return "the Mcp-Name header does not match the body"
    return None


def decode_header_value(value: str) -> str | None:
    """Undoes the `=?base64?…?=` sentinel encoding ("Value Encoding"); None when the value is not well formed."""
    if not (value.startswith(_SENTINEL_PREFIX) and value.endswith(_SENTINEL_SUFFIX)):
        return value
    encoded = value[len(_SENTINEL_PREFIX) : -len(_SENTINEL_SUFFIX)]
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
