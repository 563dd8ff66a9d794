"""JWT access tokens (RFC 9068): issued by the token endpoint, verified on every protected-resource request.

Verification is on the hot path, so it never touches the database: keys come from the in-memory key ring,
revocation from the in-memory revocation list, and a token verified once is remembered until it expires (the
signature check is the expensive part and its result cannot change; expiry, audience and revocation are still
checked on every use).

Certificate-bound tokens (RFC 8705 §3): a token issued to a client that used mutual TLS carries
`cnf: {"x5t#S256": base64url(SHA-256(DER certificate))}`, and a resource accepts it only over a connection
presenting that certificate.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from chamberlain.crypto.signing_keys import KeyRing
from chamberlain.oauth.revocation_list import RevocationList

TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1
MAX_TOKEN_LENGTH = 8192
_CLOCK_SKEW = 60  # seconds an `iat` may lie in the future (replicas' clocks drift)


@dataclass(frozen=True)
class AccessTokenClaims:
    subject: str
    client_id: str
    audience: tuple[str, ...]
    scopes: frozenset[str]
    expires_at: int
    issued_at: int
    jti: str
    grant_id: str | None
    tenant: str
    auth_time: int | None
    roles: tuple[str, ...]  # the user's roles when the grant was made: what the gateway's policy decides on
    raw: dict[str, Any]
    certificate_thumbprint: str | None = None  # RFC 8705 §3.1 cnf.x5t#S256: the token is bound to that certificate


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    expires_in: int
    claims: AccessTokenClaims


class InvalidAccessToken(Exception):
    """The token is not acceptable; `reason` is safe to show (it never echoes the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ForeignIssuer(InvalidAccessToken):
    """Signed with our keys but issued by another issuer: another tenant of this Chamberlain, or a forgery."""

    def __init__(self, issuer: object) -> None:
        super().__init__("the access token was issued by someone else")
        self.issuer = issuer if isinstance(issuer, str) else None


class AccessTokenIssuer:
    def __init__(self, issuer: str, keys: Callable[[], KeyRing], ttl: int) -> None:
        self._issuer = issuer
        self._keys = keys
        self._ttl = ttl

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        audience: str,
        scopes: frozenset[str],
        tenant: str,
        grant_id: str | None,
        auth_time: float | None,
        roles: tuple[str, ...] = (),
        certificate_thumbprint: str | None = None,
    ) -> IssuedAccessToken:
        now = int(time.time())
        # RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat and jti are required; scope per §2.2.3.
        raw: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "scope": " ".join(sorted(scopes)),
            "iat": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
            "tenant": tenant,
        }
        if grant_id is not None:
            raw["grant_id"] = grant_id
        if auth_time is not None:
            raw["auth_time"] = int(auth_time)
        if roles:
            # RFC 9068 §2.2.3.1 / RFC 7643 §4.1.2: "roles" is the registered claim for a subject's roles.
            raw["roles"] = list(roles)
        if certificate_thumbprint is not None:
            raw["cnf"] = {"x5t#S256": certificate_thumbprint}  # RFC 8705 §3.1, RFC 7800 §3.1
        token = self._keys().sign(raw, typ=TOKEN_TYPE)
        return IssuedAccessToken(token, self._ttl, _claims(raw))


class AccessTokenVerifier:
    def __init__(
        self,
        issuer: str,
        keys: Callable[[], KeyRing],
        revocations: RevocationList,
        *,
        cache_size: int = 100_000,
    ) -> None:
        self._issuer = issuer
        self._keys = keys
        self._revocations = revocations
        self._cache: dict[str, AccessTokenClaims] = {}
        self._cache_size = cache_size
        self._cached_ring: KeyRing | None = None

    def verify(self, token: str, *, audience: str | None, certificate: str | None = None) -> AccessTokenClaims:
        """Checks signature, type, issuer, expiry and revocation; and the audience unless `audience` is None.

        With an audience (a resource using the token), a certificate-bound token must come with its certificate:
        `certificate` is the thumbprint of the request's TLS client certificate (transport.tls.
        client_certificate_thumbprint), None when there is none. Without an audience (introspection, revocation:
        the authorization server looking at a token) the binding is not checked.
        """
        now = time.time()
        claims = self._verified(token)
        if claims.expires_at <= now:
            raise InvalidAccessToken("the access token has expired")
        if audience is not None and audience not in claims.audience:
            # RFC 8707 / MCP authorization: a token is good only for the resource it was issued for.
            raise InvalidAccessToken("the access token was not issued for this resource")
        revoked = self._revocations.is_revoked(
            grant_id=claims.grant_id, jti=claims.jti, tenant=claims.tenant, client_id=claims.client_id
        )
        if revoked:
            raise InvalidAccessToken("the access token has been revoked")
        if audience is not None and claims.certificate_thumbprint is not None:
            # RFC 8705 §3.2: the resource compares the token's thumbprint with the connection's certificate.
            if certificate is None:
                raise InvalidAccessToken("the access token is bound to a TLS client certificate; none was presented")
            if not hmac.compare_digest(certificate, claims.certificate_thumbprint):
                raise InvalidAccessToken("the access token is bound to another TLS client certificate")
        return claims

    def _verified(self, token: str) -> AccessTokenClaims:
        ring = self._keys()
        if ring is not self._cached_ring:
            # A key removed from the ring must stop vouching for cached tokens at once.
            self._cache.clear()
            self._cached_ring = ring
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        claims = self._decode(token, ring)
        if len(self._cache) >= self._cache_size:
            for stale in list(self._cache)[: self._cache_size // 2]:
                del self._cache[stale]
        self._cache[token] = claims
        return claims

    def _decode(self, token: str, ring: KeyRing) -> AccessTokenClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidAccessToken("the access token is too long")
        try:
            decoded = jwt.decode(
                token,
                ring.resolver(lambda: InvalidAccessToken("unknown signing key")),
                algorithms=ring.algorithms,
            )
        except InvalidAccessToken:
            raise
        except (JoseError, ValueError, TypeError):
            raise InvalidAccessToken("the access token is malformed or its signature is invalid") from None
        # RFC 9068 §4: the type must be at+jwt, so an ID token or another JWT cannot pass as an access token.
        if decoded.header.get("typ") not in (TOKEN_TYPE, "application/at+jwt"):
            raise InvalidAccessToken("the token is not an access token (typ must be at+jwt)")
        raw = decoded.claims
        if raw.get("iss") != self._issuer:
            raise ForeignIssuer(raw.get("iss"))
        try:
            claims = _claims(raw)
        except (KeyError, TypeError, ValueError):
            raise InvalidAccessToken("the access token lacks required claims") from None
        if claims.issued_at > time.time() + _CLOCK_SKEW:
            raise InvalidAccessToken("the access token was issued in the future")
        return claims


def _claims(raw: dict[str, Any]) -> AccessTokenClaims:
    audience = raw["aud"]
    audiences = (audience,) if isinstance(audience, str) else tuple(audience)
    values = (
        raw["sub"],
        raw["client_id"],
        raw["jti"],
        raw.get("scope", ""),
        raw.get("tenant", ""),
        *audiences,
    )
    if not all(isinstance(value, str) for value in values) or not audiences:
        raise TypeError("string claims expected")
    expires_at, issued_at, auth_time = raw["exp"], raw["iat"], raw.get("auth_time")
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in (expires_at, issued_at)):
        raise TypeError("numeric dates expected")
    grant_id = raw.get("grant_id")
    roles = raw.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise TypeError("roles must be a list of strings")
    confirmation = raw.get("cnf")
    thumbprint = None
    if confirmation is not None:
        # RFC 7800 §3.1: a cnf we cannot honour must not be ignored (the token would become unbound): refuse it.
        thumbprint = confirmation.get("x5t#S256") if isinstance(confirmation, dict) else None
        if not isinstance(thumbprint, str) or not thumbprint:
            raise TypeError("cnf must carry x5t#S256")
    return AccessTokenClaims(
        subject=raw["sub"],
        client_id=raw["client_id"],
        audience=audiences,
        scopes=frozenset(raw.get("scope", "").split()),
        expires_at=expires_at,
        issued_at=issued_at,
        jti=raw["jti"],
        grant_id=grant_id if isinstance(grant_id, str) else None,
        tenant=raw.get("tenant", ""),
        auth_time=auth_time if isinstance(auth_time, int) else None,
        roles=tuple(roles),
        raw=raw,
        certificate_thumbprint=thumbprint,
    )
