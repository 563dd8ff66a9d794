"""A sign-in through an identity provider, between our redirect to it and its answer, kept in a sealed cookie.

The cookie (crypto/sealed.py; AES-GCM under a key for this purpose, the tenant as associated data) holds the
provider, the `state` sent (OAuth 2.0 §10.12, RFC 9700 §4.7.1) or the SAML RelayState, the OIDC `nonce` and PKCE
verifier (RFC 7636), the SAML AuthnRequest ID (for `InResponseTo`), where to continue, and the expiry. Nothing is
stored server-side, so any replica can take the answer; the state is also claimed once in the store
(store/seen_identifiers.py), so an answer is taken once on every replica together. An answer without our cookie
(another browser, an IdP-initiated response) is refused: it could sign the victim in as the attacker (login CSRF).

After the IdP, a person whose role needs a second factor the IdP did not prove continues with a local one: the cookie
then holds a step-up instead (the user, the provider, where to continue), good for the same few minutes.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.crypto.sealed import Sealer
from chamberlain.tenancy.tenant import Tenant

FLOW_TTL = 600  # seconds from our redirect to the IdP until its answer must be back
STEP_UP_TTL = 300
COOKIE = "sso"
_PURPOSE = "sso-flow"


@dataclass(frozen=True)
class PendingSignIn:
    id: str  # the `state` (OIDC) or RelayState (SAML) sent to the IdP
    provider: str
    return_to: str  # the login form's return_to: an authorization request's query, "connect:NAME", or ""
    expires_at: float
    nonce: str = ""
    verifier: str = ""
    request_id: str = ""  # the SAML AuthnRequest's ID

    @classmethod
    def new(cls, provider: str, return_to: str, *, oidc: bool) -> PendingSignIn:
        return cls(
            id=secrets.token_urlsafe(24),
            provider=provider,
            return_to=return_to,
            expires_at=time.time() + FLOW_TTL,
            nonce=secrets.token_urlsafe(24) if oidc else "",
            verifier=secrets.token_urlsafe(48) if oidc else "",  # 64 unreserved characters (RFC 7636 §4.1)
        )


@dataclass(frozen=True)
class PendingStepUp:
    user_id: str
    provider: str
    return_to: str
    expires_at: float


def _sealer(app: Tenant) -> Sealer:
    return Sealer(app.master_key, _PURPOSE, app.id)


def remember(app: Tenant, response: Response, pending: PendingSignIn | PendingStepUp) -> None:
    kind = "sign-in" if isinstance(pending, PendingSignIn) else "step-up"
    sealed = _sealer(app).seal({"kind": kind, **asdict(pending)})
    app.cookies.write(response, COOKIE, sealed, max_age=FLOW_TTL, cross_site_post=True)


def forget(app: Tenant, response: Response) -> None:
    app.cookies.write(response, COOKIE, "", max_age=0)


def pending_sign_in(app: Tenant, request: Request) -> PendingSignIn | None:
    fields = _opened(app, request, "sign-in")
    try:
        return PendingSignIn(**fields) if fields is not None else None
    except TypeError:
        return None


def pending_step_up(app: Tenant, request: Request) -> PendingStepUp | None:
    fields = _opened(app, request, "step-up")
    try:
        return PendingStepUp(**fields) if fields is not None else None
    except TypeError:
        return None


def _opened(app: Tenant, request: Request, kind: str) -> dict[str, Any] | None:
    fields = _sealer(app).open(app.cookies.read(request, COOKIE) or "")
    if fields is None or fields.pop("kind", None) != kind:
        return None
    expires_at = fields.get("expires_at")
    if not isinstance(expires_at, (int, float)) or expires_at < time.time():
        return None
    return fields
