"""The token endpoint (OAuth 2.1 §3.2): authenticate the client, then hand the request to its grant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.audit import emit
from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import INVALID_REQUEST, UNAUTHORIZED_CLIENT, UNSUPPORTED_GRANT_TYPE, OAuthError
from chamberlain.oauth.forms import read_form
from chamberlain.oauth.grants import authorization_code, client_credentials, jwt_bearer, refresh_token
from chamberlain.oauth.token_response import TokenResponse
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.transport.tls import certificate_thumbprint, client_certificate_der

# The last argument: the thumbprint the tokens are bound to (RFC 8705 §3), or None for unbound tokens.
Grant = Callable[[Tenant, Client, dict[str, str], str | None], Awaitable[TokenResponse]]

# No implicit or password grants: OAuth 2.1 §10 and RFC 9700 §2.4 retire them.
GRANTS: dict[str, Grant] = {
    "authorization_code": authorization_code.exchange,
    "refresh_token": refresh_token.exchange,
    "client_credentials": client_credentials.exchange,
    jwt_bearer.JWT_BEARER: jwt_bearer.exchange,  # ID-JAGs (MCP ext-auth enterprise-managed authorization)
}


def certificate_binding(client: Client, certificate: bytes | None) -> str | None:
    """RFC 8705 §3: the thumbprint to bind this client's tokens to; a client whose tokens must be bound and who
    presented no certificate gets none at all rather than an unbound one (§3.4 public clients included)."""
    if not client.metadata.certificate_bound:
        return None
    if certificate is None:
        raise OAuthError(INVALID_REQUEST, "this client's tokens are bound to its TLS client certificate; present it")
    return certificate_thumbprint(certificate)


async def token(request: Request) -> Response:
    """POST /token"""
    app = tenant_of(request)
    grant_type, client_id = "", None
    try:
        form = await read_form(request)
        grant_type = form.get("grant_type", "")
        grant = GRANTS.get(grant_type)
        if grant is None:
            raise OAuthError(UNSUPPORTED_GRANT_TYPE, f"grant_type must be one of: {', '.join(GRANTS)}")
        certificate = client_certificate_der(request.scope)
        client = await app.client_authenticator.authenticate(form, request.headers.get("authorization"), certificate)
        client_id = client.client_id
        if grant_type not in client.metadata.grant_types:
            raise OAuthError(UNAUTHORIZED_CLIENT, f"this client is not registered for the {grant_type} grant")
        issued = await grant(app, client, form, certificate_binding(client, certificate))
    except OAuthError as failure:
        emit.token_refused(app.audit.log, app.id, grant_type[:64], client_id, failure.error)
        return failure.to_response()
    emit.token_issued(app.audit.log, request, grant_type, issued.access_token.claims)
    return issued.to_response()
