"""A stand-in enterprise IdP that issues Identity Assertion JWT Authorization Grants (ID-JAG), on 127.0.0.1.

Okta and Entra issue ID-JAGs from their token exchange endpoint (RFC 8693); oidc-provider does not implement that, so
this small Starlette app plays the part that Chamberlain sees: OIDC discovery (`/.well-known/openid-configuration`,
OpenID Connect Discovery 1.0 §4) and the JWKS it points to (RFC 7517 §5). Tests mint ID-JAGs directly with `mint`
(draft-ietf-oauth-identity-assertion-authz-grant §3.1: `typ: oauth-id-jag+jwt`, iss, sub, aud, client_id, jti, exp,
iat, resource, scope), and may override any header or claim to build a bad one. `rogue_key` signs with a key this
IdP does not publish (same `kid`), as a forger would.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.server import free_port, serving

ID_JAG_TYPE = "oauth-id-jag+jwt"
LIFETIME = 300  # seconds: Okta's ID-JAGs live five minutes


class IdJagIssuer:
    def __init__(self, *, port: int) -> None:
        self.issuer = f"http://127.0.0.1:{port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "idp-1", "use": "sig", "alg": "RS256"})
        self.rogue_key = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery, methods=["GET"]),
                Route("/jwks", self._jwks, methods=["GET"]),
            ]
        )

    def mint(
        self,
        *,
        audience: str,
        client_id: str,
        subject: str,
        resource: str,
        scope: str | None = "mcp:tools",
        key: RSAKey | None = None,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An ID-JAG signed with this IdP's key (or `key`); `claims` and `header` add to or replace the standard
        members, and one given as None is left out."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + LIFETIME,
            "resource": resource,
            "scope": scope,
            **claims,
        }
        signing_key = key or self.key
        protected = {"alg": "RS256", "typ": ID_JAG_TYPE, "kid": signing_key.kid, **(header or {})}
        return jwt.encode(_present(protected), _present(body), signing_key)

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": ["authorization_code", "urn:ietf:params:oauth:grant-type:token-exchange"],
                # draft-ietf-oauth-identity-assertion-authz-grant §7.1: this IdP issues ID-JAGs by token exchange.
                "identity_chaining_requested_token_types_supported": ["urn:ietf:params:oauth:token-type:id-jag"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})


def _present(members: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in members.items() if value is not None}


@contextlib.contextmanager
def idjag_issuer() -> Iterator[IdJagIssuer]:
    """Runs the stand-in IdP with uvicorn in a thread of its own until the block ends."""
    port = free_port()
    issuer = IdJagIssuer(port=port)
    with serving(issuer.app, port, name="idjag-issuer"):
        yield issuer
