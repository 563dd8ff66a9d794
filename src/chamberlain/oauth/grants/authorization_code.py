"""The authorization code grant (OAuth 2.1 §4.1.3), with PKCE (RFC 7636 §4.5-4.6) and resource binding (RFC 8707)."""

from __future__ import annotations

import time

from chamberlain.crypto.tokens import digest
from chamberlain.oauth import pkce
from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import INVALID_GRANT, INVALID_REQUEST, INVALID_TARGET, OAuthError
from chamberlain.oauth.token_response import RefreshToken, TokenResponse
from chamberlain.store.grants import AuthorizationCode
from chamberlain.tenancy.tenant import Tenant


async def exchange(app: Tenant, client: Client, form: dict[str, str], binding: str | None) -> TokenResponse:
    code = form.get("code")
    if not code:
        raise OAuthError(INVALID_REQUEST, "code is required")

    def validate(stored: AuthorizationCode) -> None:
        # OAuth 2.1 §4.1.3: the code was issued to this client, is unexpired, and the redirect_uri matches.
        if stored.client_id != client.client_id:
            raise OAuthError(INVALID_GRANT, "the code was issued to another client")
        if stored.expires_at <= time.time():
            raise OAuthError(INVALID_GRANT, "the code has expired")
        if stored.redirect_uri_given and form.get("redirect_uri") != stored.redirect_uri:
            raise OAuthError(INVALID_GRANT, "redirect_uri differs from the authorization request")
        pkce.verify(stored.code_challenge, form.get("code_verifier"))
        requested_resource = form.get("resource")
        if requested_resource is not None and requested_resource != stored.resource:
            raise OAuthError(INVALID_TARGET, "resource differs from the one authorized")

    redemption = await app.grants.redeem_code(
        digest(code), grant_ttl=app.settings.tokens.refresh_token_ttl, validate=validate
    )
    if redemption.replayed:
        await app.sync_revocations()
        raise OAuthError(INVALID_GRANT, "the code was already used; tokens issued from it are revoked")
    grant = redemption.grant
    if grant is None or grant.user_id is None:
        raise OAuthError(INVALID_GRANT, "the code is invalid")
    access_token = app.token_issuer.issue(
        subject=grant.user_id,
        client_id=client.client_id,
        audience=grant.resource,
        scopes=frozenset(grant.scope.split()),
        tenant=grant.tenant_id,
        grant_id=grant.id,
        auth_time=grant.auth_time,
        roles=grant.roles,
        certificate_thumbprint=binding,  # RFC 8705 §3.1
    )
    refresh = None
    if "refresh_token" in client.metadata.grant_types:
        refresh = RefreshToken.new()
        await app.grants.add_refresh_token(refresh.digest, grant, grant.scope)
    return TokenResponse(access_token, refresh)
