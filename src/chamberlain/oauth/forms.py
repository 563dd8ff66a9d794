"""Reading OAuth request bodies strictly: form-encoded (RFC 6749 §3.2), bounded, no repeated parameters."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from chamberlain.oauth.errors import INVALID_REQUEST, OAuthError

MAX_BODY_BYTES = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(INVALID_REQUEST, "the body must be application/x-www-form-urlencoded")
    body = await read_body(request)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError(INVALID_REQUEST, "the body is not UTF-8") from None
    form = dict(pairs)
    # RFC 6749 §3.2: request and response parameters must not be included more than once.
    if len(form) != len(pairs):
        raise OAuthError(INVALID_REQUEST, "a parameter was sent more than once")
    return form


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise OAuthError(INVALID_REQUEST, "the request body is too large", status_code=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise OAuthError(INVALID_REQUEST, "the request body is too large", status_code=413)
    return bytes(body)
