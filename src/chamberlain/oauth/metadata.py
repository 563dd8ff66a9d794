"""Authorization server metadata (RFC 8414 §2) and the JWKS it points to (RFC 7517 §5)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chamberlain.oauth.client_auth import ASSERTION_ALGORITHMS
from chamberlain.oauth.grants.jwt_bearer import ID_JAG_PROFILE
from chamberlain.oauth.token import GRANTS
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant

TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
# RFC 8705 §2.1-2.2: offered only where `serve` verifies client certificates (tls.client_ca).
MTLS_AUTH_METHODS = ["tls_client_auth", "self_signed_tls_client_auth"]
PUBLIC_CACHE = {"Cache-Control": "public, max-age=300"}


def authorization_server_metadata(app: Tenant) -> dict[str, Any]:
    issuer = app.issuer
    tls = app.settings.tls
    mutual_tls = tls.enabled and tls.client_certificate_mode != "none"
    auth_methods = TOKEN_ENDPOINT_AUTH_METHODS + (MTLS_AUTH_METHODS if mutual_tls else [])
    metadata: dict[str, Any] = {
        "issuer": issuer,  # byte-identical to every token's iss and every response's iss (RFC 8414 §3.3, RFC 9207)
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": app.token_endpoint,
        "jwks_uri": f"{issuer}/jwks.json",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "scopes_supported": sorted({*app.settings.scopes, *_server_scopes(app)}),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANTS),
        # draft-ietf-oauth-identity-assertion-authz-grant §7.2: ID-JAGs are redeemed here (which IdPs are trusted for
        # them is not disclosed, §8.4).
        "authorization_grant_profiles_supported": [ID_JAG_PROFILE],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods[1:],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "prompt_values_supported": ["none", "login", "consent"],
    }
    if mutual_tls:
        # RFC 8705 §3.3: access tokens are bound to the client certificate for clients that authenticate with one
        # or ask for it (tls_client_certificate_bound_access_tokens).
        metadata["tls_client_certificate_bound_access_tokens"] = True
    if app.settings.registration.dynamic_registration:
        metadata["registration_endpoint"] = f"{issuer}/register"
    return metadata


def _server_scopes(app: Tenant) -> set[str]:
    return {scope for resource in app.resources.values() for scope in resource.server.scopes}


async def oauth_authorization_server(request: Request) -> Response:
    """GET /.well-known/oauth-authorization-server (and the OpenID discovery path MCP clients also try).

    Both paths serve the same RFC 8414 document: Chamberlain issues access tokens, not ID tokens, so it does not
    claim to be an OpenID Provider; clients that probe the OIDC path still find the endpoints they need.
    """
    app = tenant_of(request)
    return JSONResponse(authorization_server_metadata(app), headers=PUBLIC_CACHE)


async def jwks(request: Request) -> Response:
    """GET /jwks.json: the active key and every retired key whose tokens may still be in use."""
    app = tenant_of(request)
    return JSONResponse(app.keyring.jwks(), headers=PUBLIC_CACHE)
