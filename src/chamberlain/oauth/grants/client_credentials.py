"""The client credentials grant (OAuth 2.1 §4.2) for service accounts, always for one resource (RFC 8707)."""

from __future__ import annotations

from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import INVALID_TARGET, UNAUTHORIZED_CLIENT, OAuthError
from chamberlain.oauth.scopes import granted_scopes
from chamberlain.oauth.token_response import TokenResponse
from chamberlain.tenancy.tenant import Tenant


async def exchange(app: Tenant, client: Client, form: dict[str, str], binding: str | None) -> TokenResponse:
    # OAuth 2.1 §4.2: only confidential clients may use this grant.
    if client.metadata.is_public:
        raise OAuthError(UNAUTHORIZED_CLIENT, "public clients cannot use client_credentials")
    resource = app.resource_by_url(form.get("resource") or "")
    if resource is None:
        raise OAuthError(INVALID_TARGET, "resource must name an MCP server registered here")
    requested = granted_scopes(
        form.get("scope"),
        known=app.settings.scopes,
        resource_scopes=resource.server.scopes,
        client_scope=client.metadata.scope,
    )
    # No refresh token (OAuth 2.1 §4.2.3) and no stored grant: revoking the client revokes these tokens.
    access_token = app.token_issuer.issue(
        subject=client.client_id,
        client_id=client.client_id,
        audience=resource.resource,
        scopes=requested,
        tenant=app.id,
        grant_id=None,
        auth_time=None,
        certificate_thumbprint=binding,  # RFC 8705 §3.1
    )
    return TokenResponse(access_token)
