"""The client credentials grant (OAuth 2.1 §4.2) for service accounts, always for one resource (RFC 8707)."""

from __future__ import annotations

from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import INVALID_SCOPE, INVALID_TARGET, UNAUTHORIZED_CLIENT, OAuthError
from chamberlain.oauth.scopes import format_scope, parse_scope
from chamberlain.oauth.token_response import TokenResponse
from chamberlain.state import AppState


async def exchange(app: AppState, client: Client, form: dict[str, str]) -> TokenResponse:
    # OAuth 2.1 §4.2: only confidential clients may use this grant.
    if client.metadata.is_public:
        raise OAuthError(UNAUTHORIZED_CLIENT, "public clients cannot use client_credentials")
    resource = app.resource_by_url(form.get("resource") or "")
    if resource is None:
        raise OAuthError(INVALID_TARGET, "resource must name an MCP server registered here")
    requested = parse_scope(form.get("scope")) or frozenset(resource.server.scopes)
    allowed = frozenset(app.settings.scopes) | frozenset(resource.server.scopes)
    if client.metadata.scope is not None:
        allowed &= parse_scope(client.metadata.scope)
    if not requested <= allowed:
        raise OAuthError(INVALID_SCOPE, f"scope not allowed for this client: {format_scope(set(requested - allowed))}")
    # No refresh token (OAuth 2.1 §4.2.3) and no stored grant: revoking the client revokes these tokens.
    access_token = app.token_issuer.issue(
        subject=client.client_id,
        client_id=client.client_id,
        audience=resource.resource,
        scopes=requested,
        tenant=app.settings.tenant,
        grant_id=None,
        auth_time=None,
    )
    return TokenResponse(access_token)
