"""OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, "the CIMD draft";
MCP 2025-11-25 "Authorization" and 2026-07-28 "Client Registration"): a client_id that is an https URL
naming the client's own metadata. Sections of the draft are cited by title, since its numbering moves
between revisions.

The authorization server fetches the document through the SSRF guard (chamberlain.net.ssrf), checks
that it names itself (`client_id` equal to the URL), that it claims no shared secret, and that its
metadata passes the same RFC 7591 §2 rules as dynamic registration; then caches it as HTTP says.

Every failure is `OAuthError(invalid_client)`: the client_id does not identify a usable client, which
RFC 6749 §4.1.2.1 says the authorization endpoint reports to the user without redirecting, and which
the MCP flow ("Validation Failure → error=invalid_client") names. Network-level failures share one
deliberately vague description so the error page cannot be used as an oracle for internal DNS.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final, NoReturn
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

from chamberlain.net.ssrf import (
    AddressPolicy,
    FetchedDocument,
    FetchError,
    Resolver,
    ResponseTooLargeError,
    default_ssl_context,
    fetch_limited,
    guarded_client,
)
from chamberlain.oauth.client_metadata import ClientMetadata, parse_client_metadata
from chamberlain.oauth.errors import INVALID_CLIENT, OAuthError

logger = logging.getLogger(__name__)

MAX_CLIENT_ID_LENGTH: Final = 2000
# CIMD draft, "Client Metadata Document": no shared secret can be established with a
# document anyone can read, so these authentication methods and members are forbidden.
SHARED_SECRET_AUTH_METHODS: Final = frozenset({"client_secret_basic", "client_secret_post", "client_secret_jwt"})
FORBIDDEN_MEMBERS: Final = ("client_secret", "client_secret_expires_at")
# MCP 2025-11-25 / 2026-07-28 "Client ID Metadata Documents": the document MUST include at least these.
REQUIRED_MEMBERS: Final = ("client_id", "client_name", "redirect_uris")


def _client_id_url_problem(client_id: str, *, allow_http: bool) -> str | None:
    """Why `client_id` is not a usable metadata document URL (CIMD draft, "Client Identifier"), or None."""
    if not isinstance(client_id, str) or not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:
        return f"must be a URL of at most {MAX_CLIENT_ID_LENGTH} characters"
    if any(char.isspace() or not char.isprintable() or not char.isascii() for char in client_id):
        return "must not contain whitespace, control or non-ASCII characters"
    try:
        parts = urlsplit(client_id)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return "is not a valid URL"
    allowed_schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed_schemes:
        return "must use the https scheme"
    if "#" in client_id:
        return "must not contain a fragment"
    if "@" in parts.netloc:
        return "must not contain a username or password"
    if not parts.hostname:
        return "must name a host"
    if not parts.path.startswith("/") or parts.path == "/":
        return "must contain a path component, e.g. https://example.com/client.json"
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return "must not contain single-dot or double-dot path segments"
    return None


def _invalid_client(description: str) -> OAuthError:
    return OAuthError(INVALID_CLIENT, description)


def _cache_directives(headers: httpx.Headers) -> dict[str, str]:
    # RFC 9111 §5.2: comma-separated directives, names case-insensitive, optional "=value".
    directives: dict[str, str] = {}
    for header in headers.get_list("cache-control"):
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            if name:
                directives[name.strip().lower()] = value.strip().strip('"')
    return directives


def _http_date(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _delta_seconds(value: str | None) -> int | None:
    # RFC 9111 §1.2.2: delta-seconds is a non-negative integer.
    if value is None or not value.isdigit():
        return None
    return int(value)


def freshness_lifetime(headers: httpx.Headers, *, default: float, now: Callable[[], float] = time.time) -> float | None:
    """Seconds a response may be reused for, per RFC 9111 §4.2.1, or None when it must not be stored.

    `default` is used when the response says nothing (RFC 9111 §4.2.2 leaves heuristics to the cache).
    The caller clamps the result to its own bounds.
    """
    directives = _cache_directives(headers)
    # RFC 9111 §5.2.2.5 no-store; §5.2.2.4 no-cache means "revalidate every time", which for us is
    # the same as not storing (we do not send conditional requests).
    if "no-store" in directives or "no-cache" in directives:
        return None
    if "max-age" in directives:
        # RFC 9111 §5.2.2.1: max-age takes precedence over Expires; an invalid value means stale.
        lifetime = float(_delta_seconds(directives["max-age"]) or 0)
    elif "expires" in headers:
        # RFC 9111 §5.3: Expires minus Date; an invalid Expires (such as "0") is a time in the past.
        expires = _http_date(headers.get("expires"))
        date = _http_date(headers.get("date"))
        lifetime = 0.0 if expires is None else expires - (date if date is not None else now())
    else:
        lifetime = default
    # RFC 9111 §4.2.3: a response that already spent time in caches upstream is that much older.
    age = _delta_seconds(headers.get("age")) or 0
    return max(lifetime - age, 0.0)


def _reject_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 §4 leaves duplicate names undefined; two "client_id" members would let the check and
    # the use read different values, so such documents are refused.
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise ValueError(f"duplicate member {name!r}")
        document[name] = value
    return document


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")  # RFC 8259 §6: NaN and Infinity are not permitted


def _is_json_media_type(content_type: str | None) -> bool:
    # CIMD draft, "Client Information Discovery": 200 OK with application/json or a more specific
    # application/<AS-defined>+json type; every other status and type is an error.
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _parse_document(fetched: FetchedDocument) -> dict[str, Any]:
    if 300 <= fetched.status < 400:
        # CIMD draft, "Client Information Discovery": redirects MUST NOT be followed automatically.
        raise _invalid_client("the client metadata document URL redirects; redirects are not followed")
    if fetched.status != 200:
        raise _invalid_client(f"the client metadata document URL returned HTTP {fetched.status}, not 200")
    if not _is_json_media_type(fetched.headers.get("content-type")):
        raise _invalid_client("the client metadata document must be served as application/json")
    try:
        # RFC 8259 §8.1: JSON exchanged between systems is UTF-8 (a leading BOM may be ignored).
        document = json.loads(
            fetched.body.decode("utf-8-sig"),
            object_pairs_hook=_reject_duplicate_members,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _invalid_client("the client metadata document is not valid JSON") from None
    if not isinstance(document, dict):
        raise _invalid_client("the client metadata document must be a JSON object")
    return document


def _validate_document(client_id: str, document: dict[str, Any]) -> ClientMetadata:
    missing = [name for name in REQUIRED_MEMBERS if name not in document]
    if missing:
        raise _invalid_client(f"the client metadata document lacks required members: {', '.join(missing)}")
    # CIMD draft, "Client Metadata Document": the client_id member MUST match the document URL by
    # simple string comparison (RFC 3986 §6.2.1); otherwise any document could claim to be any client.
    if document["client_id"] != client_id:
        raise _invalid_client("the client_id in the client metadata document does not match its URL")
    present = [name for name in FORBIDDEN_MEMBERS if name in document]
    if present:
        raise _invalid_client(f"a client metadata document must not contain {', '.join(present)}")
    auth_method = document.get("token_endpoint_auth_method")
    if isinstance(auth_method, str) and auth_method in SHARED_SECRET_AUTH_METHODS:
        raise _invalid_client(
            "a client metadata document cannot use a shared-secret token_endpoint_auth_method; "
            "use none or private_key_jwt"
        )
    try:
        # An omitted token_endpoint_auth_method cannot mean RFC 7591's client_secret_basic here (there
        # is no secret), so it reads as "none": a public client, the least privileged reading.
        return parse_client_metadata(document, default_auth_method="none")
    except OAuthError as exc:
        raise _invalid_client(f"the client metadata document is invalid: {exc.description}") from exc


@dataclass(frozen=True)
class _CacheEntry:
    metadata: ClientMetadata
    expires_at: float


class ClientMetadataDocumentResolver:
    """Fetches, validates and caches Client ID Metadata Documents.

    `resolver`/`policy` drive the SSRF guard. `max_bytes` defaults to the 5 KB the CIMD draft recommends.
    Cache lifetimes from Cache-Control/Expires are clamped to [min_cache, max_cache] seconds (a
    response without either is kept for min_cache); no-store and no-cache responses are not kept.
    `allow_http_loopback` (development, tests) also accepts http:// client_ids, fetched only if the
    host resolves to loopback addresses and the policy allows loopback.
    """

    def __init__(
        self,
        resolver: Resolver,
        policy: AddressPolicy,
        *,
        max_bytes: int = 5120,
        timeout: float = 5.0,
        min_cache: int = 60,
        max_cache: int = 86400,
        clock: Callable[[], float] = time.monotonic,
        allow_http_loopback: bool = False,
        max_entries: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        if not 0 <= min_cache <= max_cache:
            raise ValueError("need 0 <= min_cache <= max_cache")
        self._resolver = resolver
        self._policy = policy
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._min_cache = min_cache
        self._max_cache = max_cache
        self._clock = clock
        self._allow_http_loopback = allow_http_loopback
        self._max_entries = max_entries
        self._ssl_context = ssl_context or default_ssl_context()
        self._network_backend = network_backend
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[ClientMetadata]] = {}

    def accepts(self, client_id: str) -> bool:
        """Whether `client_id` names a metadata document this resolver would fetch (http only in development)."""
        return _client_id_url_problem(client_id, allow_http=self._allow_http_loopback) is None

    async def resolve(self, client_id: str) -> ClientMetadata:
        """The validated metadata for a URL client_id; OAuthError(invalid_client) on any failure."""
        problem = _client_id_url_problem(client_id, allow_http=self._allow_http_loopback)
        if problem is not None:
            raise _invalid_client(f"client_id {problem}")
        cached = self._cached(client_id)
        if cached is not None:
            return cached
        task = self._inflight.get(client_id)
        if task is None:
            # One fetch per URL however many authorization requests arrive for it at once.
            task = asyncio.create_task(self._fetch_and_store(client_id))
            self._inflight[client_id] = task
            task.add_done_callback(partial(self._fetch_finished, client_id))
        # shield: one caller giving up must not cancel the fetch the others are waiting on.
        return await asyncio.shield(task)

    def _cached(self, client_id: str) -> ClientMetadata | None:
        entry = self._cache.get(client_id)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            del self._cache[client_id]
            return None
        self._cache.move_to_end(client_id)
        return entry.metadata

    def _fetch_finished(self, client_id: str, task: asyncio.Task[ClientMetadata]) -> None:
        if self._inflight.get(client_id) is task:
            del self._inflight[client_id]
        if not task.cancelled():
            task.exception()  # marks it retrieved when every waiter was cancelled

    async def _fetch_and_store(self, client_id: str) -> ClientMetadata:
        fetched = await self._fetch(client_id)
        metadata = _validate_document(client_id, _parse_document(fetched))
        # CIMD draft, "Metadata Caching": error responses and invalid documents are never cached,
        # and this success path is the only one that stores.
        lifetime = freshness_lifetime(fetched.headers, default=self._min_cache)
        if lifetime is not None:
            self._store(client_id, metadata, min(max(lifetime, self._min_cache), self._max_cache))
        return metadata

    def _store(self, client_id: str, metadata: ClientMetadata, lifetime: float) -> None:
        self._cache[client_id] = _CacheEntry(metadata, self._clock() + lifetime)
        self._cache.move_to_end(client_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def _policy_for(self, client_id: str) -> AddressPolicy:
        if urlsplit(client_id).scheme == "https":
            return self._policy
        # Plain http is a development convenience: the guard then refuses anything but loopback.
        return replace(self._policy, require_loopback=True)

    async def _fetch(self, client_id: str) -> FetchedDocument:
        client = guarded_client(
            resolver=self._resolver,
            policy=self._policy_for(client_id),
            timeout=self._timeout,
            ssl_context=self._ssl_context,
            network_backend=self._network_backend,
        )
        async with client:
            try:
                return await fetch_limited(
                    client,
                    client_id,
                    max_bytes=self._max_bytes,
                    headers={"Accept": "application/json"},
                    total_timeout=self._timeout,
                )
            except ResponseTooLargeError as exc:
                raise _invalid_client(f"the client metadata document is larger than {self._max_bytes} bytes") from exc
            except FetchError as exc:
                logger.info("client metadata document %s could not be fetched: %s", client_id, exc)
                host = urlsplit(client_id).hostname
                raise _invalid_client(f"the client metadata document could not be retrieved from {host}") from exc
