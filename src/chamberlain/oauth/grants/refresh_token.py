"""The refresh token grant (OAuth 2.1 §4.3) with rotation on every use and family revocation on reuse.

OAuth 2.1 §4.3.1 and RFC 9700 §4.14.2: a refresh token for a public client must be sender-constrained or rotated;
we rotate for every client. Presenting a token that was already rotated means two parties hold it, so every
token of that family (grant) is revoked.
"""

from __future__ import annotations

from chamberlain.crypto.tokens import digest
from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import INVALID_GRANT, INVALID_REQUEST, INVALID_SCOPE, INVALID_TARGET, OAuthError
from chamberlain.oauth.scopes import parse_scope
from chamberlain.oauth.token_response import RefreshToken, TokenResponse
from chamberlain.store.grants import Grant
from chamberlain.tenancy.tenant import Tenant


async def exchange(app: Tenant, client: Client, form: dict[str, str], binding: str | None) -> TokenResponse:
    presented = form.get("refresh_token")
    if not presented:
        raise OAuthError(INVALID_REQUEST, "refresh_token is required")
    requested_scopes = parse_scope(form.get("scope"))
    requested_resource = form.get("resource")
    successor = RefreshToken.new()
    narrowed: dict[str, frozenset[str]] = {}

    def validate(grant: Grant) -> None:
        # RFC 6749 §6: the refresh token is bound to the client it was issued to.
        if grant.client_id != client.client_id:
            raise OAuthError(INVALID_GRANT, "the refresh token was issued to another client")
        granted = frozenset(grant.scope.split())
        # RFC 6749 §6: the requested scope must not include any scope not originally granted.
        if not requested_scopes <= granted:
            raise OAuthError(INVALID_SCOPE, "scope may only narrow on refresh")
        # RFC 8707 §2.2: a refresh may only ask for a resource the grant covers.
        if requested_resource is not None and requested_resource != grant.resource:
            raise OAuthError(INVALID_TARGET, "resource may only narrow on refresh")
        narrowed["scopes"] = requested_scopes or granted

    rotation = await app.grants.rotate_refresh_token(digest(presented), successor.digest, validate)
    if rotation.reused:
        await app.sync_revocations()
        raise OAuthError(INVALID_GRANT, "the refresh token was already used; the whole grant is revoked")
    grant = rotation.grant
    if grant is None or rotation.expired:
        raise OAuthError(INVALID_GRANT, "the refresh token is invalid, expired or revoked")
    access_token = app.token_issuer.issue(
        subject=grant.user_id or client.client_id,
        client_id=client.client_id,
        audience=grant.resource,
        scopes=narrowed["scopes"],
        tenant=grant.tenant_id,
        grant_id=grant.id,
        auth_time=grant.auth_time,
        roles=grant.roles,
        certificate_thumbprint=binding,  # RFC 8705 §3.1
    )
    return TokenResponse(access_token, successor)
