"""The credential the gateway presents to an upstream MCP server, chosen per server; never the client's own token.

Token passthrough is forbidden (MCP authorization, "Access Token Privilege Restriction"; MCP security best
practices, "Token Passthrough"): the client's token was issued for Chamberlain, not for the upstream. Instead the
upstream gets nothing, a static header, a token the gateway obtains for itself (RFC 6749 §4.4), a token exchanged
for this user and this upstream (RFC 8693), or an access token refreshed from a refresh token kept in the vault
(RFC 6749 §6), the gateway's own or the requesting user's. Obtained tokens are cached until shortly before they
expire, so the request path normally costs one dictionary lookup.

Secrets named by a vault reference are read through `Vault.use`, which checks the credential's tenant, its binding
to this upstream, its user (per-user credentials) and its health, and records the read (or the refusal) with the
requesting user and the request id before handing the value over. A vault header value is kept in memory for
`VAULT_VALUE_TTL` seconds, so a change (rotation, unbinding, removal) reaches the request path within that time and
the vault is not read, decrypted and audited on every request; long-lived secrets (client secrets, refresh tokens)
are read only when a token is fetched.
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
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit

import httpx
from pydantic import SecretStr

from chamberlain.audit.events import Actor
from chamberlain.crypto.signing_keys import KeyRing
from chamberlain.gateway.server_config import (
    ClientCredentialsCredential,
    HeaderCredential,
    NoCredential,
    RefreshTokenCredential,
    TokenExchangeCredential,
    UpstreamCredentialConfig,
    is_field_value,
    per_user_secret_name,
    split_vault_reference,
)
from chamberlain.gateway.upstream import Headers, UpstreamError
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.vault.backend import SecretNotFound, SecretRef, VaultError
from chamberlain.vault.leak_guard import LeakGuard
from chamberlain.vault.service import GATEWAY, CredentialRefused, CredentialUnhealthy, Vault

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

REFRESH_TOKEN_GRANT = "refresh_token"  # RFC 6749 §6
INVALID_GRANT = "invalid_grant"  # RFC 6749 §5.2: the refresh token is invalid, expired or revoked
VAULT_VALUE_TTL = 30.0  # seconds a header value read from the vault is reused before the vault is asked again
VAULT_VALUE_GRACE = 30.0  # seconds more it is still sent while the vault cannot be reached (never after a refusal)

UNAVAILABLE = "could not obtain a credential for the upstream"
NO_USABLE_CREDENTIAL = "no usable credential for this upstream"
_VSCHAR = re.compile(r"[\x20-\x7e]+")  # RFC 6749 Appendix A.17: refresh-token = 1*VSCHAR
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1: what may follow "Bearer "
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")  # RFC 6749 §5.2 codes seen in practice; anything else is not logged


# Called with the grant type before a stored secret is sent to a token endpoint; raises UpstreamError to stop it.
CredentialUse = Callable[[str], Awaitable[None]]

# The id of the client request being relayed (web/request_id.py), set by the proxy around the upstream round trip,
# so every vault read is recorded with the request that caused it. A token fetch shared by concurrent requests
# (single flight) carries the id of the request that started it.
current_request_id: ContextVar[str | None] = ContextVar("chamberlain_upstream_request_id", default=None)


class CredentialProblem(UpstreamError):
    """The credential itself is refused (missing, not bound here, another user's, a revoked grant), as opposed to a
    token endpoint or the vault being briefly unreachable: no cached token is sent in its place."""


CONNECT_PATH = "/connect"  # a tenant's page where a user grants a per-user credential (web/connect.py)


def connect_url(issuer: str, upstream: str) -> str:
    """Where a signed-in user of the tenant with this issuer connects their own grant for `upstream`."""
    return f"{issuer}{CONNECT_PATH}/{upstream}"


def reconsent_message(source: str, upstream: str, connect: str | None = None) -> str:
    """What the user reads when the upstream grant is gone: the source, never a value, and where to consent again
    (`connect`: the connect page, for a per-user credential users grant themselves; else an administrator)."""
    if connect is not None:
        return (
            f"the authorization for '{source}' was revoked or has expired: re-consent needed (open {connect} in "
            f"a browser to authorize '{source}' again, then retry '{upstream}')"
        )
    return (
        f"the authorization for '{source}' was revoked or has expired: re-consent needed (authorize '{source}' "
        f"again, then retry '{upstream}')"
    )


def user_id_of(principal: AccessTokenClaims) -> str | None:
    """The user a request acts for; None for a client acting for itself (a client-credentials token carries no
    grant and has its client as subject)."""
    if principal.grant_id is None and principal.subject == principal.client_id:
        return None
    return principal.subject


def actor_of(principal: AccessTokenClaims) -> Actor:
    """Whom a request's audit events name: its user, or its client acting for itself."""
    user = user_id_of(principal)
    return Actor("user", user) if user is not None else Actor("client", principal.client_id)


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
        self.issuer = issuer
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
    vault: VaultAccess | None = None,
) -> UpstreamCredentials:
    """The credentials for one upstream. `http` is used as given and left open; without it one is made and closed
    by `aclose`. `clock` (monotonic seconds) decides when cached tokens are renewed. `vault` is how this upstream
    reaches the vault; a credential naming a vault secret needs it. `on_use` records the use of an inline secret
    (the vault records its own reads)."""
    if isinstance(config, NoCredential):
        return NoCredentials()
    if isinstance(config, HeaderCredential):
        if config.vault is not None:
            return VaultHeader(config.header, _needs(vault).ref(config.vault), _needs(vault), clock)
        return StaticHeader(config.header, config.value)
    endpoint = token_endpoint_for(config, vault=vault, http=http, clock=clock, on_use=on_use)
    if isinstance(config, ClientCredentialsCredential):
        return ClientCredentials(config, endpoint, clock)
    if isinstance(config, TokenExchangeCredential):
        return TokenExchange(config, endpoint, subject_tokens, clock, cache_size)
    if isinstance(config, RefreshTokenCredential):
        access = _needs(vault)
        # A per-user grant users connect themselves: the re-consent message names the connect page.
        connect = connect_url(subject_tokens.issuer, access.upstream) if config.connectable else None
        return RefreshTokens(config, endpoint, access, clock, cache_size, connect=connect)
    raise TypeError(f"unknown credential type {type(config).__name__}")


def token_endpoint_for(
    config: ClientCredentialsCredential | TokenExchangeCredential | RefreshTokenCredential,
    *,
    vault: VaultAccess | None,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_use: CredentialUse | None = None,
) -> TokenEndpoint:
    """The credential's token endpoint with its client authentication: the client secret inline, in the vault
    (read through `vault` when a token is requested), or none (a public client)."""
    secret: SecretStr | ClientSecretSource | None = None
    if config.client_secret_vault is not None:
        secret = _needs(vault).client_secret(_needs(vault).ref(config.client_secret_vault))
    elif config.client_secret.get_secret_value():
        secret = config.client_secret
    return TokenEndpoint(config.token_endpoint, config.client_id, secret, http, clock, on_use)


def _needs(vault: VaultAccess | None) -> VaultAccess:
    if vault is None:
        raise ValueError("this credential names a vault secret, but no vault was given")
    return vault


ClientSecretSource = Callable[[AccessTokenClaims], Awaitable[str]]


@dataclass(frozen=True)
class VaultAccess:
    """The vault as one upstream of one tenant reaches it: references resolve in the tenant's own namespace only,
    and every read goes through `Vault.use` with this upstream, the requesting user and the request id. Vault
    failures become UpstreamErrors the client may see (they name the source, never a value)."""

    vault: Vault
    tenant: str
    upstream: str
    leak_guard: LeakGuard | None = None  # told every value read, so that it is redacted wherever it comes back

    def ref(self, reference: str, name: str | None = None) -> SecretRef:
        """The secret a "SOURCE/NAME" reference names in this tenant (`name` replaces NAME: a per-user name)."""
        source, configured = split_vault_reference(reference)
        return SecretRef(self.tenant, source, name if name is not None else configured)

    async def read(
        self, ref: SecretRef, principal: AccessTokenClaims, *, shared: bool, purpose: str, connect: str | None = None
    ) -> bytes:
        """The value for this request. `shared`: the credential is the gateway's own, whoever asks; a per-user
        credential found there is refused (its value would otherwise be cached and sent on other users' requests),
        and the vault records the refusal. `connect`: where the user consents again when the credential is
        unhealthy (a per-user grant users connect themselves)."""
        vault, user, request_id = self.vault, user_id_of(principal), current_request_id.get()
        try:
            if shared:
                record = await vault.record(ref)
                if record is not None and record.user_id is not None:
                    logger.warning(
                        "upstream %s: the vault credential %s is per-user but configured as shared: refused",
                        self.upstream,
                        ref,
                    )
                    user = None  # use() refuses it and records the refusal
            value = await vault.use(
                self.tenant, self.upstream, user, request_id, ref, client_id=principal.client_id, purpose=purpose
            )
        except CredentialUnhealthy:
            raise CredentialProblem("reauthorize", reconsent_message(ref.source, self.upstream, connect)) from None
        except (SecretNotFound, CredentialRefused) as refused:
            # Vault messages name the reference, never the value; the client learns only that none is usable.
            logger.info("upstream %s: %s", self.upstream, refused)
            raise CredentialProblem("credential", NO_USABLE_CREDENTIAL) from None
        except VaultError as problem:
            logger.warning("upstream %s: the vault cannot give %s: %s", self.upstream, ref, problem)
            raise UpstreamError("unavailable", UNAVAILABLE) from None
        if self.leak_guard is not None:
            self.leak_guard.remember(self.tenant, value, str(ref))
        return value

    def client_secret(self, ref: SecretRef) -> ClientSecretSource:
        """Reads an OAuth client secret when a token is requested (not before: it is used only then)."""

        async def read(principal: AccessTokenClaims) -> str:
            value = await self.read(ref, principal, shared=True, purpose="client authentication (RFC 6749 §2.3.1)")
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                logger.warning("upstream %s: the vault secret %s is not a UTF-8 client secret", self.upstream, ref)
                raise CredentialProblem("credential", NO_USABLE_CREDENTIAL) from None

        return read


class GuardedCredentials:
    """Tells the leak guard every header value sent to the upstream (static, from the vault, or a token obtained
    for it), under a label naming the upstream and the header, so that the proxy redacts the value wherever it comes
    back. Costs a dictionary lookup per request for a value already known."""

    def __init__(self, inner: UpstreamCredentials, guard: LeakGuard, tenant: str, upstream: str) -> None:
        self._inner = inner
        self._guard = guard
        self._tenant = tenant
        self._upstream = upstream

    async def headers(self, principal: AccessTokenClaims) -> Headers:
        headers = await self._inner.headers(principal)
        for name, value in headers:
            self._guard.remember_header(self._tenant, value, f"upstream:{self._upstream}:{name.decode('latin-1')}")
        return headers

    async def aclose(self) -> None:
        await self._inner.aclose()


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


class VaultHeader:
    """A header whose value is a vault secret: read through `Vault.use` (checked and recorded), then reused for
    `VAULT_VALUE_TTL` seconds by every request, one read at a time however many requests wait (single flight).
    The credential is the gateway's own: a per-user one configured here is refused."""

    def __init__(
        self, name: str, ref: SecretRef, access: VaultAccess, clock: Callable[[], float], ttl: float = VAULT_VALUE_TTL
    ) -> None:
        self._name = name.lower().encode("ascii")
        self._ref = ref
        self._access = access
        self._clock = clock
        self._ttl = ttl
        self._cache = TokenCache(clock, size=1)

    async def headers(self, principal: AccessTokenClaims) -> Headers:
        return [await self._cache.header(None, functools.partial(self._read, principal))]

    async def aclose(self) -> None:
        await self._cache.aclose()

    async def _read(self, principal: AccessTokenClaims) -> ObtainedToken:
        started = self._clock()
        value = await self._access.read(self._ref, principal, shared=True, purpose="upstream request header")
        text = value.decode("ascii", "replace")
        if not is_field_value(text):  # RFC 9110 §5.5, as for an inline value: no line break smuggles in a header
            logger.warning(
                "upstream %s: the vault secret %s is not a valid header value", self._access.upstream, self._ref
            )
            raise CredentialProblem("credential", NO_USABLE_CREDENTIAL)
        renew_at = started + self._ttl
        return ObtainedToken((self._name, value), renew_at, renew_at + VAULT_VALUE_GRACE)


@dataclass(frozen=True)
class ObtainedToken:
    header: tuple[bytes, bytes]  # (b"authorization", b"Bearer …"), ready to send
    renew_at: float  # clock time after which a new token is fetched
    expires_at: float  # clock time after which this one is never sent


class TokenRequestRefused(UpstreamError):
    """The token endpoint answered with an OAuth error (RFC 6749 §5.2); `error` is its code when it is a plain
    one, else "unknown"."""

    def __init__(self, error: str) -> None:
        super().__init__("unavailable", UNAVAILABLE)
        self.error = error


def _basic(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded (Appendix B) before they are joined and base64-encoded.
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class TokenEndpoint:
    """One upstream token endpoint. The gateway authenticates with client_secret_basic, the secret inline (encoded
    once) or read from the vault for each token request; without a secret it is a public client and names itself
    with `client_id` in the form (RFC 6749 §3.2.1).

    Every failure becomes the same UpstreamError; the log says what went wrong without the secret or the server's
    raw answer (either may hold credentials).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: SecretStr | ClientSecretSource | None,
        http: httpx.AsyncClient | None,
        clock: Callable[[], float],
        on_use: CredentialUse | None = None,
    ) -> None:
        self.url = url
        self._client_id = client_id
        parts = urlsplit(url)
        # What the log names: no user info or query string, where an admin might have put a secret.
        self._log_name = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        self._clock = clock
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=TOKEN_ENDPOINT_TIMEOUT)
        self._authorization: str | None = None
        self._secret_source: ClientSecretSource | None = None
        self._on_use: CredentialUse | None = None
        if isinstance(client_secret, SecretStr):
            self._authorization = _basic(client_id, client_secret.get_secret_value())
            self._on_use = on_use  # an inline secret's use is recorded here; the vault records its own reads
        elif client_secret is not None:
            self._secret_source = client_secret

    async def request(
        self, form: dict[str, str], principal: AccessTokenClaims | None = None
    ) -> tuple[dict[str, Any], float]:
        """Posts one token request for `principal`'s request; returns the successful JSON answer and the clock time
        the request started. An OAuth error answer raises TokenRequestRefused."""
        started = self._clock()
        headers = {"accept": "application/json"}
        if self._on_use is not None:
            # Using the stored secret is a credential read: recorded (durably, by default) before it happens.
            await self._on_use(form["grant_type"])
        if self._authorization is not None:
            headers["authorization"] = self._authorization
        elif self._secret_source is not None:
            if principal is None:
                raise ValueError("a client secret in the vault is read for a request's principal")
            headers["authorization"] = _basic(self._client_id, await self._secret_source(principal))
        else:
            form = {**form, "client_id": self._client_id}
        try:
            status, body = await self._post(form, headers)
        except httpx.HTTPError as exc:
            raise self.failure(f"request failed ({type(exc).__name__})") from None
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "unknown"
            logger.warning("upstream token endpoint %s: refused with HTTP %d, error %s", self._log_name, status, code)
            raise TokenRequestRefused(code)  # RFC 6749 §5.2
        if not isinstance(answer, dict):
            raise self.failure("answered with something that is not a JSON object")
        return answer, started

    def failure(self, reason: str) -> UpstreamError:
        logger.warning("upstream token endpoint %s: %s", self._log_name, reason)
        return UpstreamError("unavailable", UNAVAILABLE)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _post(self, form: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        async with self._http.stream(
            "POST",
            self.url,
            data=form,
            headers=headers,
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
    the previous token has not expired yet, it is still sent (the token endpoint may be down for a moment), unless
    the credential itself was refused (CredentialProblem).
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
        except CredentialProblem:
            raise  # refused or revoked: the old token must not stand in for it
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
        return [await self._cache.header(None, functools.partial(self._fetch, principal))]

    async def aclose(self) -> None:
        await self._cache.aclose()
        await self._endpoint.aclose()

    async def _fetch(self, principal: AccessTokenClaims) -> ObtainedToken:
        answer, started = await self._endpoint.request(self._form, principal)
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
        answer, started = await self._endpoint.request({**self._form, "subject_token": subject_token}, principal)
        # RFC 8693 §2.2.1: issued_token_type is required; only an access token (or a JWT used as one) can be sent.
        if answer.get("issued_token_type") not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise self._endpoint.failure("issued a token that is not an access token")
        return bearer_token(answer, started, self._endpoint)


class RefreshTokens:
    """RFC 6749 §6: access tokens refreshed from a refresh token kept in the vault, each cached until shortly before
    it expires; one refresh per credential at a time however many requests wait (TokenCache's single flight).

    Shared: one refresh token (the gateway's own grant) for every request. Per user: the requesting user's own
    refresh token, the secret `per_user_secret_name(NAME, user id)` of the source, which `Vault.use` hands over only
    on that user's requests; a request without a user, or of a user without one, gets no credential.

    A rotated refresh token in the answer is stored back as the secret's next version at once (the old one is spent
    at the upstream). `invalid_grant` means the grant is revoked or expired: unless the vault meanwhile holds a newer
    refresh token (another replica rotated it, and it is tried once), the credential is marked unhealthy, so every
    later request is refused with the re-consent message until a new refresh token is stored.
    """

    def __init__(
        self,
        config: RefreshTokenCredential,
        endpoint: TokenEndpoint,
        access: VaultAccess,
        clock: Callable[[], float],
        cache_size: int,
        *,
        connect: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._access = access
        self._connect = connect  # the connect page named by the re-consent message, for a grant users connect
        self._reference = config.vault
        self._per_user = config.per_user
        self._form = {"grant_type": REFRESH_TOKEN_GRANT}
        if config.scope is not None:
            self._form["scope"] = config.scope  # RFC 6749 §6: at most the scope originally granted
        if config.resource is not None:
            self._form["resource"] = config.resource  # RFC 8707 §2.2
        self._cache = TokenCache(clock, size=cache_size if config.per_user else 1)

    def secret_for(self, principal: AccessTokenClaims) -> SecretRef | None:
        """The refresh token used on `principal`'s requests; None when a per-user credential has no user here."""
        if not self._per_user:
            return self._access.ref(self._reference)
        user = user_id_of(principal)
        if user is None:
            return None
        _, name = split_vault_reference(self._reference)
        return self._access.ref(self._reference, per_user_secret_name(name, user))

    async def headers(self, principal: AccessTokenClaims) -> Headers:
        ref = self.secret_for(principal)
        if ref is None:
            logger.info("upstream %s: a per-user credential, and the request acts for no user", self._access.upstream)
            raise CredentialProblem("credential", NO_USABLE_CREDENTIAL)
        return [await self._cache.header(ref, functools.partial(self._refresh, principal, ref))]

    async def aclose(self) -> None:
        await self._cache.aclose()
        await self._endpoint.aclose()

    async def _refresh(self, principal: AccessTokenClaims, ref: SecretRef) -> ObtainedToken:
        sent: str | None = None
        for _ in range(2):
            refresh_token = await self._read(principal, ref)
            if refresh_token == sent:
                break  # nobody stored a newer one: the grant itself is refused
            sent = refresh_token
            try:
                answer, started = await self._endpoint.request(
                    {**self._form, "refresh_token": refresh_token}, principal
                )
            except TokenRequestRefused as refused:
                if refused.error != INVALID_GRANT:
                    raise
                continue
            token = bearer_token(answer, started, self._endpoint)
            await self._store_rotated(ref, sent, answer.get("refresh_token"))
            return token
        # RFC 6749 §5.2 invalid_grant: revoked, expired, or issued to another client. Only the owner can mend it.
        upstream = self._access.upstream
        logger.warning("upstream %s: the grant of %s was refused (invalid_grant): marked unhealthy", upstream, ref)
        try:
            await self._access.vault.mark_unhealthy(
                ref, f"the upstream refused the grant (invalid_grant) for {upstream}: re-consent needed"
            )
        except VaultError as problem:
            logger.error("upstream %s: could not mark %s unhealthy: %s", upstream, ref, problem)
        raise CredentialProblem("reauthorize", reconsent_message(ref.source, upstream, self._connect))

    async def _read(self, principal: AccessTokenClaims, ref: SecretRef) -> str:
        value = await self._access.read(
            ref,
            principal,
            shared=not self._per_user,
            purpose="refresh token grant (RFC 6749 §6)",
            connect=self._connect,
        )
        text = value.decode("ascii", "replace")
        if not _VSCHAR.fullmatch(text):
            logger.warning("upstream %s: the vault secret %s is not a refresh token", self._access.upstream, ref)
            raise CredentialProblem("credential", NO_USABLE_CREDENTIAL)
        return text

    async def _store_rotated(self, ref: SecretRef, sent: str, rotated: object) -> None:
        """RFC 6749 §6 / OAuth 2.1 §4.3.1: a new refresh token replaces the one sent, which the upstream may now
        refuse; it becomes the secret's next version (the older ones stay until purged)."""
        if rotated is None or rotated == sent:
            return
        upstream = self._access.upstream
        if not isinstance(rotated, str) or not _VSCHAR.fullmatch(rotated):
            logger.warning("upstream %s: the token endpoint answered with an unusable refresh_token", upstream)
            return
        vault = self._access.vault
        try:
            version = await vault.replace_value(ref, rotated.encode("ascii"))
        except VaultError as problem:
            # The access token in hand still works; the next refresh may meet invalid_grant and ask for re-consent.
            logger.error("upstream %s: could not store the rotated refresh token of %s: %s", upstream, ref, problem)
            await vault.record_rotation(
                ref,
                actor=GATEWAY,
                outcome="error",
                details={"upstream": upstream, "by": "the upstream's token endpoint (RFC 6749 §6)"},
                reason=type(problem).__name__,
                before_the_change=False,
            )
            return
        await vault.record_rotation(
            ref,
            actor=GATEWAY,
            outcome="success",
            details={
                "upstream": upstream,
                "by": "the upstream's token endpoint (RFC 6749 §6)",
                "version": version.version,
            },
            before_the_change=False,  # done at the upstream already: queued, never a reason to fail the request
        )
