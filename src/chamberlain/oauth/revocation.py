"""Token revocation (RFC 7009).

Revoking a refresh token revokes its whole grant, access tokens included (§2.1 "SHOULD"); revoking an access token
revokes that token. An unknown or invalid token still gets 200 (§2.2): the client's goal is met either way.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.audit import emit
from chamberlain.audit.events import Action
from chamberlain.crypto.tokens import digest
from chamberlain.oauth.access_tokens import InvalidAccessToken
from chamberlain.oauth.errors import INVALID_REQUEST, NO_STORE, UNSUPPORTED_TOKEN_TYPE, OAuthError
from chamberlain.oauth.forms import read_form
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.transport.tls import client_certificate_der

TOKEN_TYPE_HINTS = ("access_token", "refresh_token")


async def revoke(request: Request) -> Response:
    """POST /revoke"""
    app = tenant_of(request)
    try:
        form = await read_form(request)
        client = await app.client_authenticator.authenticate(
            form, request.headers.get("authorization"), client_certificate_der(request.scope)
        )
        token = form.get("token")
        if not token:
            raise OAuthError(INVALID_REQUEST, "token is required")
        hint = form.get("token_type_hint")
        if hint is not None and hint not in TOKEN_TYPE_HINTS:
            raise OAuthError(UNSUPPORTED_TOKEN_TYPE, "token_type_hint must be access_token or refresh_token")
        found = await app.grants.find_refresh_token(digest(token))
        if found is not None:
            grant, _current = found
            if grant.client_id == client.client_id:
                await app.grants.revoke_grant(grant.id, "revoked_by_client")
        else:
            await _revoke_access_token(app, token, client.client_id)
        await app.sync_revocations()
        # RFC 7009 §2.2: the answer is the same whether or not anything was revoked; the record says what was asked.
        details = {"token_type_hint": hint or "", "refresh_token": found is not None}
        emit.client_event(app.audit.log, app.id, Action.TOKEN_REVOKED, client.client_id, details)
    except OAuthError as failure:
        return failure.to_response()
    return Response(status_code=200, headers=NO_STORE)


async def _revoke_access_token(app: Tenant, token: str, client_id: str) -> None:
    try:
        claims = app.token_verifier.verify(token, audience=None)
    except InvalidAccessToken:
        return
    # §2.1: the server checks the token was issued to the requesting client; another client's token is left alone.
    if claims.client_id == client_id:
        await app.grants.revoke_access_token(claims.jti, claims.expires_at)
