"""The public keys a `private_key_jwt` client signs its assertions with (RFC 7523 §2.2, RFC 7591 §2).

Inline `jwks` are used as registered; a `jwks_uri` is fetched through the SSRF guard (it is a URL the client
chose, so it may point anywhere) and cached for a few minutes, so key rotation on the client's side is picked up.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from chamberlain.net.ssrf import AddressPolicy, FetchError, Resolver, fetch_limited, guarded_client
from chamberlain.oauth.client_metadata import ClientMetadata
from chamberlain.oauth.errors import invalid_client

MAX_JWKS_BYTES = 64 * 1024
CACHE_SECONDS = 300.0


class ClientKeySets:
    def __init__(
        self,
        resolver: Resolver,
        policy: AddressPolicy,
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._resolver = resolver
        self._policy = policy
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[str, tuple[float, KeySet]] = {}

    async def for_client(self, metadata: ClientMetadata) -> KeySet:
        if metadata.jwks is not None:
            return _import(metadata.jwks)
        if metadata.jwks_uri is None:
            raise invalid_client("the client registered neither jwks nor jwks_uri to verify its assertion with")
        cached = self._cache.get(metadata.jwks_uri)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        key_set = await self._fetch(metadata.jwks_uri)
        self._cache[metadata.jwks_uri] = (self._clock() + CACHE_SECONDS, key_set)
        return key_set

    async def _fetch(self, uri: str) -> KeySet:
        try:
            async with guarded_client(
                resolver=self._resolver, policy=self._policy, timeout=self._timeout, ssl_context=self._ssl_context
            ) as http:
                document = await fetch_limited(http, uri, max_bytes=MAX_JWKS_BYTES, total_timeout=self._timeout)
        except FetchError:
            raise invalid_client("the client's jwks_uri could not be retrieved") from None
        if document.status != 200:
            raise invalid_client(f"the client's jwks_uri answered HTTP {document.status}")
        try:
            return _import(json.loads(document.body))
        except ValueError:
            raise invalid_client("the client's jwks_uri did not return a JSON key set") from None


def _import(jwks: object) -> KeySet:
    try:
        return KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError):
        raise invalid_client("the client's key set is not a valid JWK Set") from None
