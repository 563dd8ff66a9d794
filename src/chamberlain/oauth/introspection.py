"""Token introspection (RFC 7662) for confidential clients and resource servers.

§2.1 requires the caller to be authorized: public clients are refused, and a client sees only tokens issued to
it (anything else is reported as inactive, §2.2, so introspection cannot be used to probe other clients' tokens).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chamberlain.crypto.tokens import digest
from chamberlain.oauth.access_tokens import InvalidAccessToken
from chamberlain.oauth.errors import INVALID_REQUEST, NO_STORE, OAuthError, invalid_client
from chamberlain.oauth.forms import read_form
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.transport.tls import client_certificate_der

INACTIVE: dict[str, Any] = {"active": False}


async def introspect(request: Request) -> Response:
    """POST /introspect"""
    app = tenant_of(request)
    try:
        form = await read_form(request)
        client = await app.client_authenticator.authenticate(
            form, request.headers.get("authorization"), client_certificate_der(request.scope)
        )
        if client.metadata.is_public:
            raise invalid_client("introspection needs a confidential client")
        token = form.get("token")
        if not token:
            raise OAuthError(INVALID_REQUEST, "token is required")
        body = await _describe(app, token)
        if body.get("client_id") != client.client_id:
            body = INACTIVE
    except OAuthError as failure:
        return failure.to_response()
    return JSONResponse(body, headers=NO_STORE)


async def _describe(app: Tenant, token: str) -> dict[str, Any]:
    try:
        claims = app.token_verifier.verify(token, audience=None)
    except InvalidAccessToken:
        return await _describe_refresh_token(app, token)
    raw = claims.raw
    return {
        "active": True,
        "token_type": "Bearer",
        # RFC 8705 §3.2: cnf tells the resource which certificate a bound token must arrive with.
        **{
            name: raw[name]
            for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "cnf")
            if name in raw
        },
    }


async def _describe_refresh_token(app: Tenant, token: str) -> dict[str, Any]:
    found = await app.grants.find_refresh_token(digest(token))
    if found is None:
        return INACTIVE
    grant, current = found
    if not current or grant.revoked_at is not None:
        return INACTIVE
    return {
        "active": True,
        "token_type": "refresh_token",
        "scope": grant.scope,
        "client_id": grant.client_id,
        "sub": grant.user_id or grant.client_id,
        "aud": grant.resource,
        "iss": app.issuer,
        "exp": int(grant.expires_at),
    }
