"""Who may use the admin API: authentication (a bearer token or the browser session) and authorisation
(`administrative_functions`), checked before a request body is read.

- A bearer token must be an access token of the path's tenant (its verifier accepts no other issuer) issued for the
  admin API (audience = `Tenant.admin_resource`, RFC 8707). A token for an MCP server is refused: it was issued to
  a client for that server, and stretching it to administration would be privilege escalation.
- Otherwise the tenant's browser session cookie is accepted, for the console. A cookie rides along on cross-site
  requests, so an unsafe method (POST, PUT, PATCH, DELETE) authenticated by it must also carry `X-CSRF-Token`: an
  HMAC of the session id (synchronizer token, bound to the session) that only a page able to read `GET /session`'s
  answer can know, and an `Origin`, when the browser sends one, that is the gateway's own. Bearer requests need
  neither: a cross-site page cannot make a browser attach an Authorization header.
- Authorisation reads the user's roles from the store on every request (the token's `roles` claim is what they
  were when it was issued), so a demoted or disabled administrator loses access at once.

401 answers carry `WWW-Authenticate: Bearer` (RFC 6750 §3; `error` only when a credential was presented, §3.1);
403 means "authenticated, but not an administrator of this tenant".
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chamberlain.admin.problems import ProblemError, problem_response
from chamberlain.net import hosts
from chamberlain.oauth.access_tokens import InvalidAccessToken
from chamberlain.sessions.browser import COOKIE, SignedIn, keep_cookie, signed_in
from chamberlain.store.users import User
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.transport.tls import client_certificate_thumbprint

CSRF_HEADER = "x-csrf-token"
CSRF_PURPOSE = "admin-api"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/openapi.json"})
MAX_BODY_BYTES = 1024 * 1024  # the largest request body read; a role document of 1,000 roles is well below
_SCOPE_KEY = "chamberlain.admin"


@dataclass(frozen=True)
class Administrator:
    tenant: Tenant
    user: User
    via: Literal["token", "session"]
    client_id: str | None  # the OAuth client that obtained the token (None for the browser session)
    session_id: str | None  # the browser session (None for a token); never shown
    signed_in: SignedIn | None = None  # the browser session, when it authenticated the request

    @property
    def platform(self) -> bool:
        """An administrator of the default tenant administers the platform: the tenants themselves."""
        return self.tenant.id == self.tenant.settings.tenant

    def csrf_token(self) -> str | None:
        return csrf_token(self.tenant, self.session_id) if self.session_id is not None else None


def is_administrator(tenant: Tenant, roles: tuple[str, ...]) -> bool:
    """Whether any of the roles grants `administrative_functions` in the tenant's role document."""
    return tenant.policy.profile(roles).administrative


class _Refusal(Exception):
    def __init__(self, status: int, detail: str, *, challenge: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.challenge = challenge


def _challenge(tenant: Tenant, error: str | None = None, description: str | None = None) -> str:
    parts = [f'realm="{tenant.admin_resource}"']
    if error is not None:
        parts.append(f'error="{error}"')
    if description is not None:
        parts.append(f'error_description="{description}"')  # fixed strings of ours: no quotes or backslashes
    return "Bearer " + ", ".join(parts)


# Read-only routes open to roles with `audit_access: read` as well as to administrators (admin/cost.py).
AUDIT_READABLE_PREFIXES = ("/cost/",)


async def authenticate(tenant: Tenant, request: Request) -> Administrator:
    """The administrator behind the request (or an audit reader, on the audit-readable routes), or _Refusal."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        administrator = await _by_token(tenant, authorization, client_certificate_thumbprint(request.scope))
    else:
        administrator = await _by_session(tenant, request)
    profile = tenant.policy.profile(administrator.user.roles)
    path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
    audit_readable = request.method in SAFE_METHODS and path.startswith(AUDIT_READABLE_PREFIXES)
    if not profile.administrative and not (profile.audit_read and audit_readable):
        raise _Refusal(403, "administrative functions are not granted to this user in this tenant")
    return administrator


async def _by_token(tenant: Tenant, authorization: str, certificate: str | None) -> Administrator:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        # RFC 6750 §3.1: a malformed credential is invalid_request.
        raise _Refusal(
            401,
            "the Authorization header must be 'Bearer <access token>'",
            challenge=_challenge(tenant, "invalid_request"),
        )
    try:
        claims = tenant.token_verifier.verify(token, audience=tenant.admin_resource, certificate=certificate)
    except InvalidAccessToken as invalid:
        raise _Refusal(401, invalid.reason, challenge=_challenge(tenant, "invalid_token", invalid.reason)) from None
    if claims.tenant != tenant.id:  # the issuer already says so; the claim must agree
        raise _Refusal(401, "the access token belongs to another tenant", challenge=_challenge(tenant, "invalid_token"))
    user = await tenant.users.get(claims.subject)
    if user is None:
        # A client-credentials token (its subject is the client) or a deleted user: nobody to authorise.
        raise _Refusal(403, "the access token does not represent a user of this tenant")
    if user.disabled:
        raise _Refusal(401, "the account is disabled", challenge=_challenge(tenant, "invalid_token"))
    return Administrator(tenant, user, "token", claims.client_id, None)


async def _by_session(tenant: Tenant, request: Request) -> Administrator:
    presented = tenant.cookies.read(request, COOKIE)
    if presented and request.method not in SAFE_METHODS:
        # Checked against the cookie as presented, before the session is used (and perhaps renewed).
        _check_csrf(tenant, request, presented)
    session = await signed_in(tenant, request)
    if session is None:
        raise _Refusal(401, "an admin access token or a signed-in session is required", challenge=_challenge(tenant))
    return Administrator(tenant, session.user, "session", None, session.session_id, session)


def csrf_token(tenant: Tenant, session_id: str) -> str:
    """The synchronizer token of one browser session: an HMAC of its id (so it reveals nothing of the id)."""
    return tenant.csrf.token(session_id, CSRF_PURPOSE, "")


def _check_csrf(tenant: Tenant, request: Request, session_id: str) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin != hosts.origin(tenant.issuer):
        raise _Refusal(403, "cross-origin requests may not use the session cookie")
    submitted = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(csrf_token(tenant, session_id).encode(), submitted.encode()):
        raise _Refusal(403, "a request authenticated by the session cookie needs the X-CSRF-Token header")


class AdminGate:
    """ASGI middleware in front of every admin route: the tenant, the administrator and a bounded body.

    Authentication comes before FastAPI parses the request, so an anonymous caller cannot make the gateway read
    a large body or learn from validation errors what a resource accepts.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            tenant = tenant_of(request)
        except HTTPException:
            await problem_response(404, "there is no such resource here")(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
        if not (path in PUBLIC_PATHS and request.method in SAFE_METHODS):
            try:
                scope[_SCOPE_KEY] = await authenticate(tenant, request)
            except _Refusal as refusal:
                headers = {"WWW-Authenticate": refusal.challenge} if refusal.challenge else {}
                await problem_response(refusal.status, refusal.detail, headers=headers)(scope, receive, send)
                return
        admin = scope.get(_SCOPE_KEY)
        if isinstance(admin, Administrator) and admin.signed_in is not None and admin.signed_in.rotated:
            send = _with_cookie(send, tenant, admin.signed_in)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await problem_response(413, f"the body may have at most {MAX_BODY_BYTES} bytes")(scope, receive, send)
            return
        await self.app(scope, _bounded(receive), _no_store(send))


def _bounded(receive: Receive) -> Receive:
    """A body sent without Content-Length (chunked) is cut off at the same size."""
    received = 0

    async def bounded_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                # An HTTPException passes FastAPI's body reading unchanged (anything else becomes a 400).
                raise HTTPException(413, f"the body may have at most {MAX_BODY_BYTES} bytes")
        return message

    return bounded_receive


def _with_cookie(send: Send, tenant: Tenant, session: SignedIn) -> Send:
    """The renewed session id goes out with the answer, whatever the answer is (the old id no longer works)."""
    carrier = Response()
    keep_cookie(tenant, carrier, session)
    cookies = [(name, value) for name, value in carrier.raw_headers if name == b"set-cookie"]

    async def send_with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *cookies]
        await send(message)

    return send_with_cookie


def _no_store(send: Send) -> Send:
    """Admin answers name users and their access: no cache (a browser's or a proxy's) may keep them."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != b"cache-control"]
            headers += [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
            message["headers"] = headers
        await send(message)

    return send_with_headers


_bearer = HTTPBearer(
    auto_error=False,
    description="An access token of this tenant for the resource {issuer}/admin/api (RFC 8707). The console may "
    "use the tenant's session cookie instead, with X-CSRF-Token on unsafe methods.",
)


def administrator(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Administrator:
    """The dependency every route takes: the administrator the gate let through (and, for OpenAPI, the scheme)."""
    found = request.scope.get(_SCOPE_KEY)
    if not isinstance(found, Administrator):  # only on a route the gate treats as public: a programming error
        raise ProblemError(401, "authentication is required")
    return found


Admin = Annotated[Administrator, Depends(administrator)]


def platform_administrator(admin: Admin) -> Administrator:
    """Tenants are managed from the default tenant only; elsewhere the platform's routes do not exist (404)."""
    if not admin.platform:
        raise ProblemError(404, "there is no such resource here")
    return admin


PlatformAdmin = Annotated[Administrator, Depends(platform_administrator)]
