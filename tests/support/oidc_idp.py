"""OpenID Providers for the SSO tests, on 127.0.0.1.

The real one — `oidc-provider` (certified), run by node from tests/support/oidc_idp.mjs:

    with running_oidc_idp(redirect_uris=[f"{gateway.base_url}/sso/corp/callback"]) as idp:
        idp.issuer                      # http://127.0.0.1:PORT
        idp.client_id, idp.client_secret  # a confidential client (client_secret_basic)
        idp.public_client_id            # a public client (token_endpoint_auth_method none, PKCE)
        idp.provider_config(client_secret="sso/corp", domains=["example.com"])  # an `sso.providers.NAME` entry
        callback = await sign_in_through(idp, authorization_url, "alice")  # the redirect to our callback, with code

Accounts (DEFAULT_ACCOUNTS unless `accounts=` is given) are keyed by username (= `sub`) with `email`, `name`,
`groups`, `amr` and `acr`: "alice" proves MFA (amr pwd+otp, acr urn:chamberlain:test:mfa), "bob" does not (amr pwd).
With `id_token_claims=False` (the default, oidc-provider's own) the ID token carries only `sub` and the
authentication claims, and email and groups come from userinfo; with True they are in the ID token.
`sign_in_through` follows the IdP's pages with httpx: its interaction signs in `login_hint` at once, or the helper
posts `username` in the login form; consent is implied. Browsers (Selenium) can sign in through the same form.

The stand-in — `CraftedIdp` (`running_crafted_idp()`), a small Starlette app for what a certified OP never does: its
token endpoint answers with whatever ID token the test sets (`idp.id_token = idp.sign(...)`), so tests can send a
wrong `iss`, `aud`, `nonce`, an expired or unsigned one, or one signed by a key it does not publish. It also serves
userinfo and a Microsoft Graph `/v1.0/me/transitiveMemberOf` stand-in (paged) for Entra's groups overage, and counts
JWKS fetches.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.server import free_port, serving

SCRIPT = Path(__file__).with_name("oidc_idp.mjs")
MFA_ACR = "urn:chamberlain:test:mfa"
DEFAULT_ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {
        "email": "alice@example.com",
        "name": "Alice Example",
        "groups": ["engineering", "admins"],
        "amr": ["pwd", "otp"],
        "acr": MFA_ACR,
    },
    "bob": {"email": "bob@example.com", "name": "Bob Example", "groups": ["engineering"], "amr": ["pwd"]},
}


@dataclass(frozen=True)
class OidcIdp:
    issuer: str
    client_id: str
    client_secret: str
    public_client_id: str
    accounts: Mapping[str, Mapping[str, Any]]

    def provider_config(
        self, *, client_secret: str | None = None, public: bool = False, **extra: Any
    ) -> dict[str, Any]:
        """An `sso.providers.NAME` entry for this IdP; `client_secret` is the vault reference holding
        `self.client_secret`. `public=True`: the public client (no secret)."""
        config: dict[str, Any] = {
            "kind": "oidc",
            "issuer": self.issuer,
            "client_id": self.public_client_id if public else self.client_id,
            "scopes": ["openid", "email", "profile", "groups"],
            **extra,
        }
        if not public:
            config["client_secret"] = client_secret
        return config


@contextlib.contextmanager
def running_oidc_idp(
    *,
    redirect_uris: Sequence[str],
    accounts: Mapping[str, Mapping[str, Any]] = DEFAULT_ACCOUNTS,
    id_token_claims: bool = False,
) -> Iterator[OidcIdp]:
    """Runs oidc-provider until the block ends."""
    client_secret = secrets.token_urlsafe(32)
    config = {
        "redirect_uris": list(redirect_uris),
        "confidential": {"client_id": "chamberlain", "client_secret": client_secret},
        "public": {"client_id": "chamberlain-public"},
        "accounts": accounts,
        "id_token_claims": id_token_claims,
    }
    process = subprocess.Popen(
        ["node", str(SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # oidc-provider warns about the Node version and its in-memory adapter
        text=True,
    )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(config))
        process.stdin.close()
        ready = process.stdout.readline()  # one line once it listens; EOF if it died
        if not ready:
            raise RuntimeError(f"oidc-provider did not start (exit code {process.wait(timeout=10)})")
        yield OidcIdp(
            issuer=json.loads(ready)["issuer"],
            client_id="chamberlain",
            client_secret=client_secret,
            public_client_id="chamberlain-public",
            accounts=accounts,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def sign_in_through(idp: OidcIdp, authorization_url: str, username: str) -> str:
    """Follows the IdP from our authorization request to the redirect that leaves it (to our redirect_uri, with
    `code`, `state` and `iss`, or an `error`), signing in as `username`; returns that URL."""
    idp_origin = _origin(idp.issuer)
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as browser:
        url = authorization_url
        for _ in range(10):
            if _origin(url) != idp_origin:
                return url
            response = await browser.get(url)
            if response.status_code == 200 and 'name="username"' in response.text:
                form = urljoin(url, _form_action(response.text))
                response = await browser.post(form, data={"username": username})
            location = response.headers.get("location")
            if response.status_code not in (302, 303) or location is None:
                raise AssertionError(f"the IdP answered {response.status_code}: {response.text[:500]}")
            url = urljoin(url, location)
    raise AssertionError("the IdP kept redirecting")


def _form_action(page: str) -> str:
    start = page.index('action="') + len('action="')
    return page[start : page.index('"', start)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class CraftedIdp:
    """A stand-in OpenID Provider whose token endpoint returns `id_token` as the test set it."""

    issuer: str
    key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "crafted-1", "use": "sig"})
    )
    id_token: str = ""
    access_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    userinfo: dict[str, Any] = field(default_factory=lambda: {"sub": "crafted-user"})
    graph_groups: list[str] = field(default_factory=list)
    iss_parameter_supported: bool = True
    discovery_broken: bool = False  # discovery answers with something that is not JSON
    jwks_status: int = 200  # anything else: the JWKS endpoint fails with it
    jwks_fetches: int = 0
    token_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def graph_url(self) -> str:
        return f"{self.issuer}/graph"

    def sign(
        self, claims: Mapping[str, Any], *, key: RSAKey | None = None, header: Mapping[str, Any] | None = None
    ) -> str:
        signing_key = key or self.key
        protected = {"alg": "RS256", "kid": signing_key.kid, **(header or {})}
        return jwt.encode(protected, dict(claims), signing_key)

    def claims(self, *, client_id: str, nonce: str, **extra: Any) -> dict[str, Any]:
        """Valid claims for `client_id` and `nonce`; `extra` adds or replaces (None removes)."""
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "sub": "crafted-user",
            "aud": client_id,
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
        }
        return base | extra

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/token", self._token, methods=["POST"]),
                Route("/userinfo", self._userinfo),
                Route("/graph/v1.0/me/transitiveMemberOf/microsoft.graph.group", self._graph),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        if self.discovery_broken:
            return Response("<html>maintenance</html>", media_type="text/html")
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "authorization_response_iss_parameter_supported": self.iss_parameter_supported,
            }
        )

    async def _jwks(self, request: Request) -> Response:
        self.jwks_fetches += 1
        if self.jwks_status != 200:
            return JSONResponse({}, status_code=self.jwks_status)
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def _token(self, request: Request) -> Response:
        self.token_requests.append({key: str(value) for key, value in (await request.form()).items()})
        if self.token_requests[-1].get("code") == "refused":
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"access_token": self.access_token, "token_type": "Bearer", "id_token": self.id_token})

    async def _userinfo(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(self.userinfo)

    async def _graph(self, request: Request) -> Response:
        # Graph's documented list shape: `value` and, while more remain, `@odata.nextLink` (one group per page here).
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return JSONResponse({"error": {"code": "InvalidAuthenticationToken"}}, status_code=401)
        index = int(request.query_params.get("$skiptoken", "0"))
        page: dict[str, Any] = {
            "value": [
                {"@odata.type": "#microsoft.graph.group", "id": group} for group in self.graph_groups[index : index + 1]
            ]
        }
        if index + 1 < len(self.graph_groups):
            page["@odata.nextLink"] = (
                f"{self.graph_url}{request.url.path.removeprefix('/graph')}?$skiptoken={index + 1}"
            )
        return JSONResponse(page)


@contextlib.contextmanager
def running_crafted_idp() -> Iterator[CraftedIdp]:
    """Runs the stand-in with uvicorn in a thread of its own until the block ends."""
    port = free_port()
    idp = CraftedIdp(issuer=f"http://127.0.0.1:{port}")
    with serving(idp.app(), port, name="crafted-idp"):
        yield idp
