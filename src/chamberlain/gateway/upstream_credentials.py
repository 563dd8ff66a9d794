"""The credential the gateway presents to an upstream MCP server, chosen per server; never the client's own token.

Token passthrough is forbidden (MCP authorization, "Access Token Privilege Restriction"; MCP security best
practices, "Token Passthrough"): the client's token was issued for Chamberlain, not for the upstream. Instead the
upstream gets nothing, a static header, a token the gateway obtains for itself (RFC 6749 §4.4), or a token
exchanged for this user and this upstream (RFC 8693). Obtained tokens are cached until shortly before they expire,
so the request path normally costs one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit

import httpx
from pydantic import SecretStr

from chamberlain.crypto.signing_keys import KeyRing
from chamberlain.gateway.server_config import (
    ClientCredentialsCredential,
    HeaderCredential,
    NoCredential,
    TokenExchangeCredential,
    UpstreamCredentialConfig,
)
from chamberlain.gateway.upstream import Headers, UpstreamError
from chamberlain.oauth.access_tokens import AccessTokenClaims

logger = logging.getLogger(__name__)

TOKEN_ENDPOINT_TIMEOUT = 10.0  # seconds
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
SUBJECT_TOKEN_TTL = 90  # seconds: long enough for one exchange, too short to be worth stealing
DEFAULT_TOKEN_LIFETIME = 300  # seconds a token is reused when the server does not say (RFC 6749 §5.1 expires_in)
MAX_EARLY_RENEWAL = 60.0  # renew this long before expiry at most; at most 10 % of the lifetime for short tokens
EXCHANGE_CACHE_SIZE = 10_000  # exchanged tokens kept per upstream (one per user and client)

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693 §2.1
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # RFC 8693 §3
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_JWT_TYPE = "JWT"  # not at+jwt: it is no access token for Chamberlain (RFC 9068 §4)

UNAVAILABLE = "could not obtain a credential for the upstream"
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1: what may follow "Bearer "
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")  # RFC 6749 §5.2 codes seen in practice; anything else is not logged


# Called with the grant type before a stored secret is sent to a token endpoint; raises UpstreamError to stop it.
CredentialUse = Callable[[str], Awaitable[None]]


class UpstreamCredentials(Protocol):
    async def headers(self, principal: AccessTokenClaims) -> Headers:
        """The headers that authenticate the gateway to the upstream for `principal`; UpstreamError if none."""
        ...

    async def aclose(self) -> None:
        """Stops pending fetches and closes the HTTP client this object created."""
        ...


class SubjectTokenMinter:
    """Signs the subject token of an RFC 8693 exchange: a short-lived JWT naming the user the gateway acts for,
    addressed to one token endpoint only, with the key that signs Chamberlain's access tokens (so the upstream's
    authorization server verifies it against Chamberlain's published JWKS)."""

    def __init__(self, issuer: str, keys: Callable[[], KeyRing], *, ttl: int = SUBJECT_TOKEN_TTL) -> None:
        self._issuer = issuer
        self._keys = keys
        self._ttl = ttl

    def mint(self, principal: AccessTokenClaims, audience: str) -> str:
        now = int(time.time())
        # RFC 7519 §4.1 registered claims; client_id (RFC 8693 §4.3) and tenant say through which client and for
        # which tenant the user came.
        claims = {
            "iss": self._issuer,
            "sub": principal.subject,
            "aud": audience,
            "iat": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
            "client_id": principal.client_id,
            "tenant": principal.tenant,
        }
        return self._keys().sign(claims, typ=SUBJECT_TOKEN_JWT_TYPE)


def credentials_for(
    config: UpstreamCredentialConfig,
    *,
    subject_tokens: SubjectTokenMinter,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.monotonic,
    cache_size: int = EXCHANGE_CACHE_SIZE,
    on_use: CredentialUse | None = None,
) -> UpstreamCredentials:
    """The credentials for one upstream. `http` is used as given and left open; without it one is made and closed
    by `aclose`. `clock` (monotonic seconds) decides when cached tokens are renewed."""
    if isinstance(config, NoCredential):
        return NoCredentials()
    if isinstance(config, HeaderCredential):
        return StaticHeader(config.header, config.value)
    endpoint = TokenEndpoint(config.token_endpoint, config.client_id, config.client_secret, http, clock, on_use)
    if isinstance(config, ClientCredentialsCredential):
        return ClientCredentials(config, endpoint, clock)
    if isinstance(config, TokenExchangeCredential):
        return TokenExchange(config, endpoint, subject_tokens, clock, cache_size)
    raise TypeError(f"unknown credential type {type(config).__name__}")


class NoCredentials:
    async def headers(self, principal: AccessTokenClaims) -> Headers:
        return []

    async def aclose(self) -> None:
        return None


class StaticHeader:
    """A fixed secret header, encoded once: this runs on every proxied request."""

    def __init__(self, name: str, value: SecretStr) -> None:
        self._header = (name.lower().encode("ascii"), value.get_secret_value().encode("ascii"))  # checked on load

    async def headers(self, principal: AccessTokenClaims) -> Headers:
        return [self._header]

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class ObtainedToken:
    header: tuple[bytes, bytes]  # (b"authorization", b"Bearer …"), ready to send
    renew_at: float  # clock time after which a new token is fetched
    expires_at: float  # clock time after which this one is never sent


class TokenEndpoint:
    """One upstream token endpoint, the gateway authenticated with client_secret_basic.

    Every failure becomes the same UpstreamError; the log says what went wrong without the secret or the server's
    raw answer (either may hold credentials).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: SecretStr,
        http: httpx.AsyncClient | None,
        clock: Callable[[], float],
        on_use: CredentialUse | None = None,
    ) -> None:
        self.url = url
        self._on_use = on_use
        parts = urlsplit(url)
        # What the log names: no user info or query string, where an admin might have put a secret.
        self._log_name = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self._clock = clock
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=TOKEN_ENDPOINT_TIMEOUT)
        # RFC 6749 §2.3.1: id and secret are form-urlencoded (Appendix B) before they are joined and base64-encoded.
        pair = f"{quote_plus(client_id)}:{quote_plus(client_secret.get_secret_value())}"
        self._authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    async def request(self, form: dict[str, str]) -> tuple[dict[str, Any], float]:
        """Posts one token request; returns the successful JSON answer and the clock time the request started."""
        started = self._clock()
        if self._on_use is not None:
            # Using the stored secret is a credential read: recorded (durably, by default) before it happens.
            await self._on_use(form["grant_type"])
        try:
            status, body = await self._post(form)
        except httpx.HTTPError as exc:
            raise self.failure(f"request failed ({type(exc).__name__})") from None
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "unknown"
            raise self.failure(f"refused with HTTP {status}, error {code}")  # RFC 6749 §5.2
        if not isinstance(answer, dict):
            raise self.failure("answered with something that is not a JSON object")
        return answer, started

    def failure(self, reason: str) -> UpstreamError:
        logger.warning("upstream token endpoint %s: %s", self._log_name, reason)
        return UpstreamError("unavailable", UNAVAILABLE)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _post(self, form: dict[str, str]) -> tuple[int, bytes]:
        async with self._http.stream(
            "POST",
            self.url,
            data=form,
            headers={"authorization": self._authorization, "accept": "application/json"},
            timeout=TOKEN_ENDPOINT_TIMEOUT,
            follow_redirects=False,  # RFC 6749 §3.2 names one endpoint; the credentials go nowhere else
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_TOKEN_RESPONSE_BYTES:
                    raise self.failure("answered with an oversized body")
            return response.status_code, bytes(body)


def bearer_token(answer: dict[str, Any], started: float, endpoint: TokenEndpoint) -> ObtainedToken:
    """RFC 6749 §5.1: a Bearer access_token (RFC 6750), reused until shortly before `expires_in` runs out."""
    token, token_type, expires_in = answer.get("access_token"), answer.get("token_type"), answer.get("expires_in")
    if not isinstance(token, str) or not _B64TOKEN.fullmatch(token):
        raise endpoint.failure("answered without a usable access_token")
    # RFC 6749 §5.1: token_type is case-insensitive. RFC 8693 §2.2.1: N_A marks a token that is no access token.
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise endpoint.failure("answered with a token that is not a Bearer access token")
    if expires_in is None:
        lifetime = float(DEFAULT_TOKEN_LIFETIME)
    elif isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        lifetime = float(expires_in)
    else:
        raise endpoint.failure("answered with an invalid expires_in")
    # Measured from before the request, and renewed early, so a token is never sent after it expired.
    renew_at = started + lifetime - min(MAX_EARLY_RENEWAL, lifetime / 10)
    return ObtainedToken((b"authorization", b"Bearer " + token.encode("ascii")), renew_at, started + lifetime)


class TokenCache:
    """Tokens by key, reused until their renewal time, at most `size` of them (least recently used dropped first).

    One fetch per key at a time: concurrent callers wait for the same fetch, and a caller that gives up (its client
    went away) does not cancel it for the others. A failed fetch is not cached: the next caller tries again; while
    the previous token has not expired yet, it is still sent (the token endpoint may be down for a moment).
    """

    def __init__(self, clock: Callable[[], float], size: int) -> None:
        self._clock = clock
        self._size = size
        self._tokens: OrderedDict[Hashable, ObtainedToken] = OrderedDict()
        self._flights: dict[Hashable, asyncio.Task[ObtainedToken]] = {}

    async def header(self, key: Hashable, fetch: Callable[[], Awaitable[ObtainedToken]]) -> tuple[bytes, bytes]:
        token = self._tokens.get(key)
        if token is not None and self._clock() < token.renew_at:
            self._tokens.move_to_end(key)
            return token.header
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.create_task(self._fetch(key, fetch))
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        try:
            return (await asyncio.shield(flight)).header
        except UpstreamError:
            if token is not None and self._clock() < token.expires_at:
                return token.header
            raise

    async def aclose(self) -> None:
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
        self._tokens.clear()

    async def _fetch(self, key: Hashable, fetch: Callable[[], Awaitable[ObtainedToken]]) -> ObtainedToken:
        token = await fetch()
        self._tokens[key] = token
        self._tokens.move_to_end(key)
        while len(self._tokens) > self._size:
            self._tokens.popitem(last=False)
        return token

    def _landed(self, key: Hashable, flight: asyncio.Task[ObtainedToken]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # marks the outcome retrieved even when every waiter gave up


class ClientCredentials:
    """RFC 6749 §4.4: one token for the gateway itself, shared by every user of the upstream."""

    def __init__(
        self, config: ClientCredentialsCredential, endpoint: TokenEndpoint, clock: Callable[[], float]
    ) -> None:
        self._endpoint = endpoint
        self._form = {"grant_type": "client_credentials"}
        if config.scope is not None:
            self._form["scope"] = config.scope
        if config.resource is not None:
            self._form["resource"] = config.resource  # RFC 8707 §2.1
        self._cache = TokenCache(clock, size=1)

    async def headers(self, principal: AccessTokenClaims) -> Headers:
        return [await self._cache.header(None, self._fetch)]

    async def aclose(self) -> None:
        await self._cache.aclose()
        await self._endpoint.aclose()

    async def _fetch(self) -> ObtainedToken:
        answer, started = await self._endpoint.request(self._form)
        return bearer_token(answer, started, self._endpoint)


class TokenExchange:
    """RFC 8693: a token for this user at this upstream, exchanged for a subject token Chamberlain signs.

    Cached per tenant, user and client (the scope, audience and resource are fixed per upstream): the subject token
    names the client, and the upstream's server may record it in what it issues.
    """

    def __init__(
        self,
        config: TokenExchangeCredential,
        endpoint: TokenEndpoint,
        subject_tokens: SubjectTokenMinter,
        clock: Callable[[], float],
        cache_size: int,
    ) -> None:
        self._endpoint = endpoint
        self._subject_tokens = subject_tokens
        # RFC 8693 §2.1: the parameters that do not depend on the user.
        self._form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token_type": JWT_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        for name in ("audience", "resource", "scope"):
            value = getattr(config, name)
            if value is not None:
                self._form[name] = value
        self._cache = TokenCache(clock, size=cache_size)

    async def headers(self, principal: AccessTokenClaims) -> Headers:
        key = (principal.tenant, principal.subject, principal.client_id)
        return [await self._cache.header(key, functools.partial(self._exchange, principal))]

    async def aclose(self) -> None:
        await self._cache.aclose()
        await self._endpoint.aclose()

    async def _exchange(self, principal: AccessTokenClaims) -> ObtainedToken:
        subject_token = self._subject_tokens.mint(principal, audience=self._endpoint.url)
        answer, started = await self._endpoint.request({**self._form, "subject_token": subject_token})
        # RFC 8693 §2.2.1: issued_token_type is required; only an access token (or a JWT used as one) can be sent.
        if answer.get("issued_token_type") not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise self._endpoint.failure("issued a token that is not an access token")
        return bearer_token(answer, started, self._endpoint)
