"""OTLP/HTTP metrics ingest: POST {tenant path}/v1/metrics, per the OTLP specification 1.x
(opentelemetry-proto, docs/specification.md, "OTLP/HTTP").

Request: an ExportMetricsServiceRequest, binary protobuf (`Content-Type: application/x-protobuf`) or JSON
(`application/json`, the proto3 JSON mapping with OTLP's deviations: keys only in lowerCamelCase, enums only as
integers, `traceId`/`spanId` as hex, unknown fields ignored), optionally `Content-Encoding: gzip`. The body is
limited, after decompression too (the spec's recommended 20 MiB by default), and read only once the caller is
authenticated.

Authentication: a bearer token (`Authorization: Bearer …`, what OTEL_EXPORTER_OTLP_HEADERS or Claude Code's
`otelHeadersHelper` sends) or `x-api-key`: an access token for the tenant's LLM resource `{issuer}/llm`, or a virtual
key (`llm_ingestion`, the endpoint's default; no database round trip). The usage is the authenticated caller's, and
becomes UsageRecords of source "telemetry" (telemetry/claude_code.py) handed to the UsageRecorder.

Response (the spec's "OTLP/HTTP Response"), in the request's encoding:
- 200 with an ExportMetricsServiceResponse; `partial_success` is set only when points were rejected (their number,
  and why in English), and the client must then not retry;
- 400 bad data (undecodable, or not OTLP), 401 unauthenticated (with a Bearer challenge), 413 too large, 415 a
  Content-Type or Content-Encoding other than these; each with a google.rpc.Status body (its `message`), never a
  stack trace. None of them is retryable (the spec's retryable codes are 429, 502, 503 and 504).
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from starlette.types import Receive, Scope, Send

from chamberlain.cost.pricing import Pricing, PricingError
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.teams import team_of
from chamberlain.gateway.upstream_credentials import user_id_of
from chamberlain.llm.proxy import llm_metadata_url, llm_principal
from chamberlain.oauth.access_tokens import InvalidAccessToken
from chamberlain.telemetry.claude_code import Caller, ClaudeCodeMetrics
from chamberlain.tenancy.routing import tenant_for_scope
from chamberlain.transport.tls import client_certificate_thumbprint
from chamberlain.web.request_id import request_id_of

logger = logging.getLogger(__name__)

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
MAX_BODY_BYTES: Final = 20 * 1024 * 1024  # the spec's recommended default limit, before and after decompression
_HEX_FIELDS: Final = frozenset({"trace_id", "span_id"})  # OTLP/JSON: hex, not base64
_MAX_DEPTH: Final = 64  # JSON nesting accepted (OTLP's own nests about ten deep; AnyValue can nest further)

Encoding = Literal["protobuf", "json"]


class OtlpError(Exception):
    """A request refused as a whole; `message` is safe to send back (no token, no content)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Ingestion:
    """What `authenticate` answers for an accepted credential: who sends, where its records go, at which prices."""

    caller: Caller
    record: Callable[[UsageRecord], None]  # UsageRecorder.record: queued, never blocks
    pricing: Pricing | None


# (scope, the credential presented) -> Ingestion; raises InvalidAccessToken, or LookupError for an unknown tenant.
Authenticate = Callable[[Scope, str], Ingestion]


def llm_ingestion(scope: Scope, credential: str) -> Ingestion:
    """The gateway's Authenticate: the path's tenant, a caller of its LLM resource (an access token whose audience
    is {issuer}/llm, or a virtual key), the caller's team from their roles, the process's usage recorder and the
    tenant's prices (None when its price file is invalid: Claude Code's own cost figures are kept then)."""
    tenant = tenant_for_scope(scope)
    if tenant is None:
        raise LookupError("no such tenant")
    shared = tenant.shared
    principal = llm_principal(tenant, credential, certificate=client_certificate_thumbprint(scope))
    caller = Caller(
        tenant.id, user_id_of(principal), team_of(principal.roles, tenant.config.llm.teams), principal.client_id
    )
    try:
        pricing: Pricing | None = shared.llm.pricing(tenant)
    except PricingError as invalid:
        logger.error("tenant %s: %s", tenant.id, invalid)
        pricing = None
    return Ingestion(caller, shared.usage_recorder.record, pricing)


def llm_challenge(scope: Scope) -> str:
    """RFC 6750 §3 with RFC 9728 §5.1: where a client learns which authorization server issues tokens here."""
    tenant = tenant_for_scope(scope)
    return f'Bearer resource_metadata="{llm_metadata_url(tenant)}"' if tenant is not None else "Bearer"


# -- decoding -------------------------------------------------------------------------------------------------------


def media_type(content_type: str | None) -> Encoding:
    """Which encoding a Content-Type names (parameters such as charset are allowed); OtlpError 415 otherwise."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == PROTOBUF:
        return "protobuf"
    if kind == JSON:
        return "json"
    raise OtlpError(415, f"Content-Type must be {PROTOBUF} or {JSON}")


def decompressed(body: bytes, coding: str | None, limit: int) -> bytes:
    """The body without its Content-Encoding (gzip or none), at most `limit` bytes of it."""
    coding = (coding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding != "gzip":
        raise OtlpError(415, "Content-Encoding must be gzip or absent")
    output = bytearray()
    remaining = body
    while remaining:  # RFC 1952 §2.2: a gzip file is a series of members
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = remaining
        try:
            while not member.eof:
                # At most one byte past the limit at a time: a small body cannot inflate into a large buffer.
                chunk = member.decompress(pending, limit + 1 - len(output))
                output += chunk
                if len(output) > limit:
                    raise OtlpError(413, f"the decompressed request exceeds {limit} bytes")
                pending = member.unconsumed_tail
                if not chunk and not pending:
                    raise OtlpError(400, "the gzip data is truncated")
        except zlib.error:
            raise OtlpError(400, "the body is not valid gzip data") from None
        remaining = member.unused_data
    return bytes(output)


def decode(body: bytes, encoding: Encoding) -> ExportMetricsServiceRequest:
    if encoding == "protobuf":
        try:
            return ExportMetricsServiceRequest.FromString(body)
        except (DecodeError, RecursionError, ValueError):
            raise OtlpError(400, "the body is not a protobuf ExportMetricsServiceRequest") from None
    try:
        document = json.loads(body, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise OtlpError(400, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise OtlpError(400, "the body is not a JSON ExportMetricsServiceRequest object")
    normalised = _normalised(document, ExportMetricsServiceRequest.DESCRIPTOR, 0)
    try:
        return json_format.ParseDict(normalised, ExportMetricsServiceRequest(), max_recursion_depth=_MAX_DEPTH)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as invalid:
        raise OtlpError(400, f"the body is not an ExportMetricsServiceRequest: {_first_line(invalid)}") from None


def _no_constants(name: str) -> str:
    # Bare NaN and Infinity are not JSON (RFC 8259 §6); protobuf's JSON mapping spells them as strings.
    raise ValueError(f"{name} is not JSON")


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


_JSON_NAMES: dict[str, dict[str, FieldDescriptor]] = {}


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    known = _JSON_NAMES.get(descriptor.full_name)
    if known is None:
        known = _JSON_NAMES[descriptor.full_name] = {field.json_name: field for field in descriptor.fields}
    return known


def _normalised(document: dict[str, Any], descriptor: Descriptor, depth: int) -> dict[str, Any]:
    """The object as protobuf's own JSON parser must see it to honour OTLP/JSON: only lowerCamelCase keys (others,
    snake_case included, are unknown fields and dropped), enums as integers only, trace and span ids from hex."""
    if depth > _MAX_DEPTH:
        raise OtlpError(400, "the JSON nests too deep")
    kept: dict[str, Any] = {}
    for key, value in document.items():
        field = _fields(descriptor).get(key)
        if field is None:
            continue  # OTLP/JSON: unknown fields are ignored
        kept[key] = _value(field, value, depth) if value is not None else None
    return kept


def _value(field: FieldDescriptor, value: Any, depth: int) -> Any:
    if field.is_repeated:
        if not isinstance(value, list):
            raise OtlpError(400, f"{field.json_name} must be a JSON array")
        return [_single(field, item, depth) for item in value]
    return _single(field, value, depth)


def _single(field: FieldDescriptor, value: Any, depth: int) -> Any:
    if field.message_type is not None:
        if not isinstance(value, dict):
            raise OtlpError(400, f"{field.json_name} must be a JSON object")
        return _normalised(value, field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM and (not isinstance(value, int) or isinstance(value, bool)):
        raise OtlpError(400, f"{field.json_name} must be an integer (OTLP/JSON encodes enums as integers)")
    if field.type == FieldDescriptor.TYPE_BYTES and field.name in _HEX_FIELDS:
        if not isinstance(value, str):
            raise OtlpError(400, f"{field.json_name} must be a hex string")
        try:
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise OtlpError(400, f"{field.json_name} must be a hex string") from None
    return value


# -- encoding -------------------------------------------------------------------------------------------------------


def response_body(rejected: int, message: str, encoding: Encoding) -> bytes:
    response = ExportMetricsServiceResponse()
    if rejected:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = message
    if encoding == "protobuf":
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()


def status_body(message: str, encoding: Encoding) -> bytes:
    """A google.rpc.Status (googleapis google/rpc/status.proto) with only `message` (field 2): the spec lets the
    server omit `code`, and clients do not act on it."""
    if encoding == "json":
        return json.dumps({"message": message}, separators=(",", ":")).encode()
    text = message.encode()
    return b"\x12" + _varint(len(text)) + text  # field 2, wire type 2 (length-delimited)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | 0x80 if number else byte)
        if not number:
            return bytes(out)


# -- the endpoint ---------------------------------------------------------------------------------------------------


class OtlpMetricsEndpoint:
    """The ASGI endpoint of POST {tenant path}/v1/metrics (mount it with methods=["POST"])."""

    def __init__(
        self,
        authenticate: Authenticate = llm_ingestion,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        challenge: Callable[[Scope], str] | None = llm_challenge,
        metrics: ClaudeCodeMetrics | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._limit = max_body_bytes
        self._challenge = challenge  # the WWW-Authenticate value of a 401 (RFC 6750 §3)
        self.metrics = metrics or ClaudeCodeMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        encoding: Encoding = "json" if headers.get("content-type", "").lower().startswith(JSON) else "protobuf"
        try:
            ingestion = self._ingestion(scope, headers)
            encoding = media_type(headers.get("content-type"))
            body = decompressed(await self._body(receive, headers), headers.get("content-encoding"), self._limit)
            request = decode(body, encoding)
        except OtlpError as refused:
            await self._send(send, refused.status, status_body(refused.message, encoding), encoding, scope)
            return
        conversion = self.metrics.convert(request, ingestion.caller, ingestion.pricing, request_id=request_id_of(scope))
        for record in conversion.records:
            ingestion.record(record)
        await self._send(send, 200, response_body(conversion.rejected, conversion.message, encoding), encoding, scope)

    def _ingestion(self, scope: Scope, headers: dict[str, str]) -> Ingestion:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() != "bearer":
                raise OtlpError(401, "use Authorization: Bearer with an access token, or x-api-key")
        else:
            credential = headers.get("x-api-key", "")
        credential = credential.strip()
        if not credential:
            raise OtlpError(401, "an access token or API key is required (Authorization: Bearer, or x-api-key)")
        try:
            return self._authenticate(scope, credential)
        except InvalidAccessToken as invalid:
            raise OtlpError(401, invalid.reason) from None
        except LookupError:
            raise OtlpError(404, "there is no such tenant here") from None

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            raise OtlpError(413, f"the request exceeds {self._limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise OtlpError(400, "the client went away before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                raise OtlpError(413, f"the request exceeds {self._limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _send(self, send: Send, status: int, body: bytes, encoding: Encoding, scope: Scope) -> None:
        # OTLP/HTTP: the response's Content-Type is the request's encoding's.
        headers = [(b"content-type", (PROTOBUF if encoding == "protobuf" else JSON).encode())]
        if status == 401 and self._challenge is not None:
            headers.append((b"www-authenticate", self._challenge(scope).encode()))
        if status == 415:
            headers.append((b"accept-encoding", b"gzip"))  # RFC 9110 §12.5.3: the codings we take
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = ["Ingestion", "OtlpError", "OtlpMetricsEndpoint", "llm_challenge", "llm_ingestion"]
