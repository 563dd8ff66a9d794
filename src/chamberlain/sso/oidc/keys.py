"""What an OpenID Provider publishes about itself: its discovery document and its signing keys, fetched and cached.

One IssuerKeys per process (the sign-in flow and the ID-JAG grant share it), over one pooled httpx client. Discovery
documents are cached for `metadata_ttl`; a JWKS is cached and fetched again when a token names a `kid` it does not
hold (key rotation, OIDC Core §10.1.1), at most once per `refresh_interval` per issuer, so tokens with made-up `kid`s
cannot make us hammer the provider.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError, UnsupportedAlgorithmError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from pydantic import TypeAdapter, ValidationError

from chamberlain.sso.common_config import https_url
from chamberlain.sso.identity import IdentityProviderUnavailable, SignInRefused

MAX_DOCUMENT_BYTES = 256 * 1024
_URL = TypeAdapter(https_url)
# RFC 8725 §3.1-3.2: `none` is never accepted, and a symmetric algorithm would turn a published public key into an
# HMAC secret anyone can use (algorithm confusion): an issuer's published keys verify asymmetric signatures only.
_NEVER = frozenset({"none", "HS256", "HS384", "HS512"})


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of an OpenID Provider's metadata (OIDC Discovery 1.0 §3) this relying party uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str | None
    jwks_uri: str
    userinfo_endpoint: str | None
    # RFC 9207 §3: the provider puts `iss` in its authorization responses, so a response without it is refused.
    iss_parameter_supported: bool
    token_endpoint_auth_methods: tuple[str, ...]


class IssuerKeys:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        metadata_ttl: float = 3600.0,
        keys_ttl: float = 3600.0,
        refresh_interval: float = 30.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.timeout = timeout
        self._metadata_ttl = metadata_ttl
        self._keys_ttl = keys_ttl
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}
        self._keys: dict[str, _CachedKeys] = {}
        self._attempted: dict[str, float] = {}  # when each issuer's JWKS was last requested
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def metadata(self, issuer: str) -> ProviderMetadata:
        cached = self._metadata.get(issuer)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        async with self._lock("discovery", issuer):
            cached = self._metadata.get(issuer)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            # OIDC Discovery 1.0 §4: a trailing "/" of the issuer is removed before appending the well-known path.
            document = await self.get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", what="discovery")
            found = _parse_metadata(issuer, document)
            self._metadata[issuer] = (self._clock() + self._metadata_ttl, found)
            return found

    async def verify(
        self, token: str, *, issuer: str, algorithms: Collection[str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The token's header and claims once its signature verifies with one of `issuer`'s published keys under an
        allowed algorithm. Claims are not checked here: that is the caller's, by the rules of its token type."""
        try:
            header = extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise SignInRefused("id_token_malformed", "The identity provider's token is malformed.") from None
        allowed = [algorithm for algorithm in algorithms if algorithm not in _NEVER]
        if header.get("alg") not in allowed:
            raise SignInRefused(
                "id_token_algorithm", "The identity provider signed its token with a refused algorithm."
            )
        kid = header.get("kid")
        keys = await self._key_set(issuer, kid if isinstance(kid, str) else None)
        try:
            decoded = jwt.decode(token, keys, algorithms=allowed)
        except (InvalidKeyIdError, UnsupportedAlgorithmError):
            raise SignInRefused(
                "id_token_key_unknown", "The identity provider's token is signed by an unknown key."
            ) from None
        except BadSignatureError:
            raise SignInRefused(
                "id_token_signature", "The identity provider's token has an invalid signature."
            ) from None
        except (JoseError, ValueError, TypeError):
            raise SignInRefused("id_token_malformed", "The identity provider's token is malformed.") from None
        return dict(decoded.header), dict(decoded.claims)

    async def get_json(self, url: str, *, what: str, **request: Any) -> dict[str, Any]:
        """GET `url` and its JSON object; IdentityProviderUnavailable when unreachable, not 200, or not JSON."""
        return await self.request_json("GET", url, what=what, **request)

    async def request_json(self, method: str, url: str, *, what: str, **request: Any) -> dict[str, Any]:
        try:
            # The whole exchange, not each read: a provider dripping bytes cannot hold a sign-in for long.
            async with asyncio.timeout(self.timeout), self.http.stream(method, url, **request) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise _unavailable(what, "answered with a document that is too large")
        except (httpx.HTTPError, TimeoutError):
            raise _unavailable(what, "could not be reached") from None
        if response.status_code != 200:
            raise _unavailable(
                what, f"answered HTTP {response.status_code}", status=response.status_code, body=bytes(body)
            )
        try:
            document = json.loads(body)
        except ValueError:
            raise _unavailable(what, "did not answer with JSON") from None
        if not isinstance(document, dict):
            raise _unavailable(what, "did not answer with a JSON object")
        return document

    async def _key_set(self, issuer: str, kid: str | None) -> KeySet:
        cached = self._keys.get(issuer)
        if cached is not None and cached.serves(kid, self._clock()):
            return cached.keys
        metadata = await self.metadata(issuer)  # before the keys' lock: metadata() takes the discovery lock
        async with self._lock("jwks", issuer):
            cached = self._keys.get(issuer)
            now = self._clock()
            if cached is not None and cached.serves(kid, now):
                return cached.keys
            # Rate limit: one JWKS request per interval, whether the last one succeeded or failed.
            if self._attempted.get(issuer, -self._refresh_interval) + self._refresh_interval > now:
                if cached is not None and cached.expires_at > now:
                    return cached.keys  # an unknown kid, but we asked very recently: the verification refuses it
                raise IdentityProviderUnavailable(
                    "idp_jwks", "The identity provider's keys are unavailable. Try again later."
                )
            self._attempted[issuer] = now
            keys = _parse_key_set(await self.get_json(metadata.jwks_uri, what="JWKS"))
            self._keys[issuer] = _CachedKeys(keys, expires_at=now + self._keys_ttl)
            return keys

    def _lock(self, kind: str, issuer: str) -> asyncio.Lock:
        return self._locks.setdefault((kind, issuer), asyncio.Lock())


@dataclass(frozen=True)
class _CachedKeys:
    keys: KeySet
    expires_at: float

    def serves(self, kid: str | None, now: float) -> bool:
        """Fresh, and holding the token's key (a token without `kid` is left to the verification to match)."""
        return self.expires_at > now and (kid is None or any(key.kid == kid for key in self.keys.keys))


class ProviderError(IdentityProviderUnavailable):
    """The provider answered with an HTTP error; `status` and `body` let a caller read an OAuth error response."""

    def __init__(self, reason: str, message: str, *, status: int, body: bytes) -> None:
        super().__init__(reason, message)
        self.status = status
        self.body = body

    def oauth_error(self) -> str | None:
        """RFC 6749 §5.2's `error` code, if the body is an OAuth error response."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        error = document.get("error") if isinstance(document, dict) else None
        return error if isinstance(error, str) else None


def _unavailable(
    what: str, problem: str, *, status: int | None = None, body: bytes = b""
) -> IdentityProviderUnavailable:
    reason = "idp_" + what.lower().replace(" ", "_")
    message = f"The identity provider's {what} endpoint {problem}. Try again later."
    if status is None:
        return IdentityProviderUnavailable(reason, message)
    return ProviderError(reason, message, status=status, body=body)


def _parse_metadata(issuer: str, document: Mapping[str, Any]) -> ProviderMetadata:
    # OIDC Discovery 1.0 §4.3: the issuer in the document MUST be exactly the one it was fetched for.
    if document.get("issuer") != issuer:
        raise IdentityProviderUnavailable(
            "idp_discovery_issuer", "The identity provider's discovery document names another issuer."
        )
    methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=_endpoint(document, "authorization_endpoint"),
        token_endpoint=_endpoint(document, "token_endpoint", required=False),
        jwks_uri=_endpoint(document, "jwks_uri"),
        userinfo_endpoint=_endpoint(document, "userinfo_endpoint", required=False),
        iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
        token_endpoint_auth_methods=tuple(m for m in methods if isinstance(m, str))
        if isinstance(methods, list)
        else (),
    )


def _endpoint(document: Mapping[str, Any], name: str, *, required: bool = True) -> Any:
    value = document.get(name)
    if value is None and not required:
        return None
    try:
        return _URL.validate_python(value)
    except ValidationError:
        raise IdentityProviderUnavailable(
            "idp_discovery_invalid", f"The identity provider's discovery document has no valid {name}."
        ) from None


def _parse_key_set(document: Mapping[str, Any]) -> KeySet:
    try:
        # Keys for other uses (RFC 7517 §4.2 `use: enc`) are left out: only signing keys verify signatures.
        keys = [key for key in document.get("keys", []) if isinstance(key, dict) and key.get("use", "sig") == "sig"]
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError, AttributeError):
        raise IdentityProviderUnavailable("idp_jwks_invalid", "The identity provider's JWKS is not valid.") from None
