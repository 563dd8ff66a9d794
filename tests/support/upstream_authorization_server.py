"""A stand-in for an upstream MCP server's own OAuth authorization server, on 127.0.0.1.

It serves one token endpoint with four grants, done properly: client credentials (RFC 6749 §4.4), token exchange
(RFC 8693 §2) for a subject token Chamberlain signed, checked against Chamberlain's JWKS (given directly, or fetched
from the gateway's `/jwks.json` on every exchange), refresh tokens (RFC 6749 §6) for grants a test creates with
`grant(subject)` or a user makes at the authorization endpoint: each use rotates the refresh token (OAuth 2.1
§4.3.1; `rotate_refresh_tokens`), a rotated one presented again revokes its grant (reuse detection, RFC 9700
§4.14.2), and `revoke` ends a grant as a user withdrawing consent would; and the authorization code grant (RFC 6749
§4.1) with PKCE (RFC 7636, S256 only), its code single use (a second redemption revokes the grant it made).

The authorization endpoint (`/authorize`) approves at once as the person signed in here, `approve_as` (an upstream
identity; None: the person declines, `access_denied`), for clients whose redirect URIs tests register in
`redirect_uris`; an unknown client or redirect URI gets a page, never a redirect (RFC 6749 §4.1.2.1). Responses
carry `iss` (RFC 9207; `response_issuer`, None to leave it out). `refresh_tokens_for_codes` False plays a server
that grants no offline access. Every authorization request is kept in `authorizations`.

Confidential clients authenticate with client_secret_basic (RFC 6749 §2.3.1); clients in `public_clients` send
only their client_id (refresh and authorization code grants). Tokens it issues are JWTs under its own key, readable
with `verify`. Every token request it served is kept in `served`, so tests can count fetches; `answer_with`
replaces every answer (after the request is recorded) to play a broken server; `delay` holds every answer back, so
concurrent callers overlap.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.server import free_port, serving

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MAX_SUBJECT_TOKEN_LIFETIME = 300  # seconds; a longer-lived subject token is refused
CODE_LIFETIME = 60  # seconds an authorization code may wait for its exchange (RFC 6749 §4.1.2: at most 10 min)
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")  # RFC 7636 §4.2: base64url of a SHA-256 digest


@dataclass(frozen=True)
class ServedRequest:
    form: dict[str, str]
    client_id: str | None  # the authenticated client; None when authentication failed
    status: int

    @property
    def grant_type(self) -> str | None:
        return self.form.get("grant_type")


@dataclass(frozen=True)
class CannedAnswer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] | None = None


@dataclass
class RefreshGrant:
    """One authorization a user (or the gateway) gave: its current refresh token and those it replaced."""

    id: str
    subject: str
    client_id: str
    scope: str | None
    current: str
    spent: set[str]
    revoked: bool = False


@dataclass
class IssuedCode:
    """An authorization code (RFC 6749 §4.1.2) and what its exchange must match."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    subject: str
    scope: str | None
    resource: str | None
    expires_at: float
    grant: RefreshGrant | None = None  # made by its (only) redemption
    redeemed: bool = False


class OAuthFailure(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


class UpstreamAuthorizationServer:
    def __init__(
        self,
        *,
        port: int,
        clients: Mapping[str, str],
        subject_issuer: str,
        subject_jwks: Mapping[str, Any] | str,
        expires_in: int = 300,
    ) -> None:
        self.issuer = f"http://127.0.0.1:{port}"
        self.token_endpoint = f"{self.issuer}/token"
        self.authorization_endpoint = f"{self.issuer}/authorize"
        self.clients = dict(clients)  # client_id -> secret; tests may add clients while it runs
        self.subject_issuer = subject_issuer
        self.subject_jwks = subject_jwks  # a JWKS, or the URL to fetch it from
        self.expires_in = expires_in
        self.answer_with: CannedAnswer | None = None
        self.delay = 0.0  # seconds every answer is held back
        self.public_clients: set[str] = set()
        self.rotate_refresh_tokens = True
        self.grants: dict[str, RefreshGrant] = {}
        self._by_refresh_token: dict[str, RefreshGrant] = {}
        self._lock = threading.Lock()  # grants are created by tests on their own thread
        self.served: list[ServedRequest] = []
        self.redirect_uris: dict[str, set[str]] = {}  # client_id -> its registered redirect URIs
        self.approve_as: str | None = None  # who is signed in here and approves every authorization request
        self.response_issuer: str | None = self.issuer  # the `iss` of authorization responses (RFC 9207)
        self.refresh_tokens_for_codes = True
        self.authorizations: list[dict[str, str]] = []
        self.codes: dict[str, IssuedCode] = {}
        self._key = ECKey.generate_key("P-256", parameters={"kid": "upstream-as"})
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/authorize", self._authorize, methods=["GET"]),
            ]
        )

    def count(self, grant_type: str, *, succeeded: bool = True) -> int:
        """How many requests of this grant type it answered (successfully, by default)."""
        return sum(1 for r in self.served if r.grant_type == grant_type and (r.status == 200) == succeeded)

    def grant(self, subject: str, *, client_id: str, scope: str | None = None) -> RefreshGrant:
        """A new grant of `subject` to `client_id`, as if the user had consented: its first refresh token is
        `grant.current`."""
        with self._lock:
            return self._new_grant(subject, client_id, scope)

    def _new_grant(self, subject: str, client_id: str, scope: str | None) -> RefreshGrant:
        token = secrets.token_urlsafe(32)
        grant = RefreshGrant(uuid.uuid4().hex, subject, client_id, scope, token, set())
        self.grants[grant.id] = grant
        self._by_refresh_token[token] = grant
        return grant

    def grants_of(self, subject: str) -> list[RefreshGrant]:
        """The grants `subject` made, oldest first."""
        with self._lock:
            return [grant for grant in self.grants.values() if grant.subject == subject]

    async def _authorize(self, request: Request) -> Response:
        """RFC 6749 §4.1.1-4.1.2 with PKCE (RFC 7636 §4.3): approved at once as `approve_as`."""
        params = {key: str(value) for key, value in request.query_params.items()}
        self.authorizations.append(params)
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        # §4.1.2.1: with an unknown client or redirect URI, tell the person; never redirect.
        if redirect_uri not in self.redirect_uris.get(client_id, set()):
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        answer: dict[str, str]
        if params.get("response_type") != "code":
            answer = {"error": "unsupported_response_type"}
        elif params.get("code_challenge_method") != "S256" or not _CHALLENGE.fullmatch(
            params.get("code_challenge", "")
        ):
            answer = {"error": "invalid_request", "error_description": "PKCE with S256 is required"}
        elif self.approve_as is None:
            answer = {"error": "access_denied", "error_description": "the user declined"}
        else:
            code = secrets.token_urlsafe(32)
            with self._lock:
                self.codes[code] = IssuedCode(
                    client_id,
                    redirect_uri,
                    params["code_challenge"],
                    self.approve_as,
                    params.get("scope"),
                    params.get("resource"),
                    time.time() + CODE_LIFETIME,
                )
            answer = {"code": code}
        if "state" in params:
            answer["state"] = params["state"]
        if self.response_issuer is not None:
            answer["iss"] = self.response_issuer  # RFC 9207 §2
        response = RedirectResponse(f"{redirect_uri}?{urlencode(answer)}", status_code=302)
        response.headers["cache-control"] = "no-store"
        return response

    def revoke(self, grant: RefreshGrant) -> None:
        """The user withdrew consent (or the grant expired): its refresh tokens are refused with invalid_grant."""
        with self._lock:
            grant.revoked = True

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this server issued, after checking its signature."""
        return dict(jwt.decode(token, self._key, algorithms=["ES256"]).claims)

    async def _token(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        client_id: str | None = None
        try:
            client_id = self._authenticate(request.headers.get("authorization"), form)
            answer = await self._grant(form, client_id)
            status = 200
        except OAuthFailure as failure:
            answer, status = {"error": failure.error, "error_description": failure.description}, failure.status
        if self.delay:
            await asyncio.sleep(self.delay)
        canned = self.answer_with
        self.served.append(ServedRequest(form, client_id, status if canned is None else canned.status))
        if canned is not None:
            return Response(canned.body, canned.status, dict(canned.headers or {}), media_type=canned.content_type)
        # RFC 6749 §5.1: token responses are never cached; §5.2: invalid_client over Basic answers 401.
        headers = {"cache-control": "no-store"}
        if status == 401:
            headers["www-authenticate"] = 'Basic realm="upstream"'
        return JSONResponse(answer, status, headers)

    def _authenticate(self, authorization: str | None, form: Mapping[str, str]) -> str:
        """RFC 6749 §2.3.1: base64 of the form-urlencoded id and secret joined by ':'. A public client (§2.1) sends
        only its client_id, and only for a refresh grant (§6: confidential clients must authenticate)."""
        if authorization is None and form.get("client_id") in self.public_clients:
            if form.get("grant_type") not in ("refresh_token", "authorization_code"):
                raise OAuthFailure(400, "unauthorized_client", "public clients may only refresh or redeem codes")
            return form["client_id"]
        if not authorization or authorization[:6].lower() != "basic ":
            raise OAuthFailure(401, "invalid_client", "client authentication required")
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthFailure(401, "invalid_client", "malformed credentials") from None
        raw_id, separator, raw_secret = decoded.partition(":")
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if not separator or self.clients.get(client_id) != secret:
            raise OAuthFailure(401, "invalid_client", "client authentication failed")
        return client_id

    async def _grant(self, form: dict[str, str], client_id: str) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":
            return self._issue(form, subject=client_id, client_id=client_id, extra={})
        if grant_type == TOKEN_EXCHANGE_GRANT:
            subject = await self._verified_subject_token(form)
            answer = self._issue(form, subject=subject["sub"], client_id=client_id, extra={"act": {"sub": client_id}})
            return {**answer, "issued_token_type": ACCESS_TOKEN_TYPE}  # RFC 8693 §2.2.1
        if grant_type == "refresh_token":
            return self._refresh(form, client_id)
        if grant_type == "authorization_code":
            return self._redeem(form, client_id)
        raise OAuthFailure(400, "unsupported_grant_type", "unsupported grant type")

    def _redeem(self, form: dict[str, str], client_id: str) -> dict[str, Any]:
        """RFC 6749 §4.1.3 and RFC 7636 §4.6: the code, once, by its client, with its redirect URI and verifier."""
        invalid = OAuthFailure(400, "invalid_grant", "the code is invalid, expired, used or not this client's")
        with self._lock:
            issued = self.codes.get(form.get("code", ""))
            if issued is None or issued.client_id != client_id or time.time() > issued.expires_at:
                raise invalid
            if issued.redeemed:
                # RFC 6749 §4.1.2: a code used twice is refused, and what it gave is revoked.
                if issued.grant is not None:
                    issued.grant.revoked = True
                raise invalid
            if form.get("redirect_uri") != issued.redirect_uri:
                raise invalid
            verifier = form.get("code_verifier", "")
            computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(computed, issued.code_challenge):
                raise OAuthFailure(400, "invalid_grant", "the code_verifier does not match the code_challenge")
            issued.redeemed = True
            extra: dict[str, Any] = {}
            if self.refresh_tokens_for_codes:
                issued.grant = self._new_grant(issued.subject, client_id, issued.scope)
                extra["grant"] = issued.grant.id
            answer = self._issue(
                {**form, "scope": issued.scope or "", "resource": form.get("resource") or issued.resource or ""},
                subject=issued.subject,
                client_id=client_id,
                extra=extra,
            )
            if issued.grant is not None:
                answer["refresh_token"] = issued.grant.current
            return answer

    def _refresh(self, form: dict[str, str], client_id: str) -> dict[str, Any]:
        """RFC 6749 §6. invalid_grant for an unknown, revoked or spent token, or one issued to another client."""
        presented = form.get("refresh_token", "")
        with self._lock:
            grant = self._by_refresh_token.get(presented)
            if grant is None or grant.revoked or grant.client_id != client_id:
                raise OAuthFailure(400, "invalid_grant", "the refresh token is invalid, expired or revoked")
            if presented in grant.spent:
                grant.revoked = True  # a replayed token: whoever holds the family loses it (RFC 9700 §4.14.2)
                raise OAuthFailure(400, "invalid_grant", "the refresh token was already used")
            requested = form.get("scope")
            if requested and grant.scope and not set(requested.split()) <= set(grant.scope.split()):
                raise OAuthFailure(400, "invalid_scope", "more scope than granted")  # RFC 6749 §6
            scope = requested or grant.scope
            answer = self._issue(
                {**form, "scope": scope or ""}, subject=grant.subject, client_id=client_id, extra={"grant": grant.id}
            )
            if self.rotate_refresh_tokens:
                grant.spent.add(presented)
                grant.current = secrets.token_urlsafe(32)
                self._by_refresh_token[grant.current] = grant
                answer["refresh_token"] = grant.current
            return answer

    async def _verified_subject_token(self, form: dict[str, str]) -> dict[str, Any]:
        """RFC 8693 §2.1: the subject token must be a JWT, signed by Chamberlain, for this endpoint, still valid."""
        if form.get("subject_token_type") != JWT_TOKEN_TYPE or not form.get("subject_token"):
            raise OAuthFailure(400, "invalid_request", "a JWT subject_token is required")
        if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise OAuthFailure(400, "invalid_request", "only access tokens are issued")
        keys = KeySet.import_key_set(await self._subject_key_set())  # type: ignore[arg-type]
        try:
            token = jwt.decode(form["subject_token"], keys, algorithms=["ES256", "Ed25519"])
            registry = jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.subject_issuer},
                aud={"essential": True, "value": self.token_endpoint},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                jti={"essential": True},
            )
            registry.validate(token.claims)
        except (JoseError, ValueError):
            raise OAuthFailure(400, "invalid_grant", "the subject token is not acceptable") from None
        claims = dict(token.claims)
        if token.header.get("typ") != "JWT" or claims["exp"] - claims["iat"] > MAX_SUBJECT_TOKEN_LIFETIME:
            raise OAuthFailure(400, "invalid_grant", "the subject token is not acceptable")
        return claims

    async def _subject_key_set(self) -> Mapping[str, Any]:
        if not isinstance(self.subject_jwks, str):
            return self.subject_jwks
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(self.subject_jwks)
            response.raise_for_status()
            return dict(response.json())

    def _issue(self, form: dict[str, str], *, subject: str, client_id: str, extra: dict[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        # RFC 8707 resource and RFC 8693 audience both name where the token may be used.
        audiences = [value for value in (form.get("resource"), form.get("audience")) if value]
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audiences[0] if len(audiences) == 1 else audiences or self.issuer,
            "client_id": client_id,
            "iat": now,
            "exp": now + self.expires_in,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        answer: dict[str, Any] = {"token_type": "Bearer", "expires_in": self.expires_in}
        if form.get("scope"):
            claims["scope"] = answer["scope"] = form["scope"]
        answer["access_token"] = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "upstream-as"}, claims, self._key)
        return answer


@contextlib.contextmanager
def upstream_authorization_server(
    *,
    clients: Mapping[str, str],
    subject_issuer: str,
    subject_jwks: Mapping[str, Any] | str,
    expires_in: int = 300,
) -> Iterator[UpstreamAuthorizationServer]:
    """Runs the stand-in with uvicorn in a thread of its own until the block ends."""
    port = free_port()
    authorization_server = UpstreamAuthorizationServer(
        port=port, clients=clients, subject_issuer=subject_issuer, subject_jwks=subject_jwks, expires_in=expires_in
    )
    with serving(authorization_server.app, port, name="upstream-as"):
        yield authorization_server
