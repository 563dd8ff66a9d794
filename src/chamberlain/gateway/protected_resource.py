"""MCP servers as OAuth protected resources: RFC 9728 metadata, and the bearer check on /mcp/{server}.

The bearer check runs on every request and never touches the database (see oauth/access_tokens.py); the proxy
(gateway/proxy.py) calls it first. The client's token is never forwarded anywhere.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chamberlain.oauth.access_tokens import AccessTokenClaims, ForeignIssuer, InvalidAccessToken
from chamberlain.oauth.errors import INSUFFICIENT_SCOPE, INVALID_REQUEST, INVALID_TOKEN
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import ProtectedResource, Tenant
from chamberlain.transport.tls import client_certificate_thumbprint

METADATA_PREFIX = "/.well-known/oauth-protected-resource"


def resource_metadata_url(app: Tenant, server_name: str) -> str:
    # RFC 9728 §3.1: the well-known segment goes between the host and the resource's path.
    return f"{app.settings.public_url}{METADATA_PREFIX}{app.path('/mcp/')}{server_name}"


async def protected_resource_metadata(request: Request) -> Response:
    """GET /.well-known/oauth-protected-resource/mcp/{server}"""
    app = tenant_of(request)
    resource = app.resources.get(request.path_params["server"])
    if resource is None:
        return not_found()
    return JSONResponse(
        {
            "resource": resource.resource,  # RFC 9728 §3.3: identical to the URL the client used
            "authorization_servers": [app.issuer],
            "scopes_supported": list(resource.server.scopes),
            "bearer_methods_supported": ["header"],
            "resource_name": resource.server.name,
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


def not_found() -> Response:
    return JSONResponse({"error": "not_found", "error_description": "no such MCP server"}, status_code=404)


def challenge(
    app: Tenant,
    resource: ProtectedResource,
    *,
    status_code: int,
    error: str | None = None,
    description: str | None = None,
    scopes: frozenset[str] | tuple[str, ...] | None = None,
) -> Response:
    """RFC 6750 §3 / RFC 9728 §5.1: a Bearer challenge that tells the client where to find our metadata."""
    params = [f'resource_metadata="{resource_metadata_url(app, resource.server.name)}"']
    needed = scopes if scopes is not None else resource.server.scopes
    if needed:
        params.append(f'scope="{" ".join(sorted(needed))}"')
    if error:
        params.append(f'error="{error}"')
        if description:
            params.append(f'error_description="{description}"')
    body = {
        "error": error or "unauthorized",
        "error_description": description or "a bearer token is required",
    }
    return JSONResponse(body, status_code=status_code, headers={"WWW-Authenticate": "Bearer " + ", ".join(params)})


def authenticate(app: Tenant, resource: ProtectedResource, request: Request) -> AccessTokenClaims | Response:
    origin = request.headers.get("origin")
    if origin is not None and origin != app.issuer:
        # MCP streamable HTTP transport: servers must validate Origin to stop DNS-rebinding attacks from browsers.
        return JSONResponse({"error": "forbidden", "error_description": "this Origin is not allowed"}, status_code=403)
    # OAuth 2.1 §5.1.1 / MCP authorization: tokens travel only in the Authorization header, never in the URI.
    if "access_token" in request.query_params:
        return challenge(
            app,
            resource,
            status_code=401,
            error=INVALID_REQUEST,
            description="tokens in the URI are not accepted",
        )
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return challenge(app, resource, status_code=401)
    try:
        claims = app.token_verifier.verify(
            token.strip(), audience=resource.resource, certificate=client_certificate_thumbprint(request.scope)
        )
    except ForeignIssuer as foreign:
        if foreign.issuer is not None and app.shared.tenant_by_issuer(foreign.issuer) is not None:
            # A principal of another tenant: to them this server does not exist (and whether it does in this
            # tenant must not leak), so the answer is the one for an unknown server.
            return not_found()
        return challenge(app, resource, status_code=401, error=INVALID_TOKEN, description=foreign.reason)
    except InvalidAccessToken as invalid:
        return challenge(app, resource, status_code=401, error=INVALID_TOKEN, description=invalid.reason)
    missing = frozenset(resource.server.scopes) - claims.scopes
    if missing:
        # RFC 6750 §3.1 and MCP step-up: name every scope the call needs, not only the missing ones.
        return challenge(
            app,
            resource,
            status_code=403,
            error=INSUFFICIENT_SCOPE,
            description="the token lacks a required scope",
            scopes=frozenset(resource.server.scopes) | claims.scopes,
        )
    return claims
