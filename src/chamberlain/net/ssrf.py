"""Outbound HTTP for URLs chosen by strangers (CIMD documents, JWKS URIs), guarded against SSRF.

The guard sits in the connection layer, not in front of it: httpcore asks our network backend to
connect to (host, port); we resolve the host through a `Resolver`, refuse the whole connection if ANY
answer is an address the `AddressPolicy` forbids, and then connect to a vetted IP literal. The HTTP
layer keeps the original host name, so TLS still sends it as SNI and verifies the certificate against
it. Because the socket goes to the exact address we checked, a DNS answer that changes between the
check and the connection (DNS rebinding) cannot redirect us.

Why: draft-ietf-oauth-client-id-metadata-document-02 §8.6 "Server Side Request Forgery (SSRF)
Attacks" (the AS SHOULD avoid fetching private or loopback addresses), cited by the MCP 2026-07-28
"Security Considerations".
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import certifi
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    """An outbound fetch failed or was refused; the message is safe to log, not to show verbatim."""


class BlockedAddressError(FetchError):
    """The target resolved to an address the policy forbids; no connection was attempted."""


class ResponseTooLargeError(FetchError):
    """The response body was (or declared itself) larger than the caller's limit."""


class Resolver(Protocol):
    """Name resolution seam: production uses DNS, tests map names to addresses without any network."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every IP address (as a string) that `host` resolves to."""
        ...


class SystemResolver:
    """Resolves with the operating system's resolver (getaddrinfo), off the event loop thread."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise FetchError(f"could not resolve {host!r}") from exc
        addresses: list[str] = []
        for family, _type, _proto, _canonname, sockaddr in answers:
            address = str(sockaddr[0])
            if family in (socket.AF_INET, socket.AF_INET6) and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise FetchError(f"{host!r} has no IPv4 or IPv6 address")
        return addresses


class AddressKind(enum.Enum):
    GLOBAL = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    RESERVED = "reserved"
    NON_GLOBAL = "non-global (special-purpose)"


# RFC 1122 §3.2.1.3 "this network": Linux connects 0.0.0.0 to the local host, so it is never a target.
_THIS_NETWORK: Final = ipaddress.IPv4Network("0.0.0.0/8")
_PRIVATE_NETWORKS: Final[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]] = (
    ipaddress.IPv4Network("10.0.0.0/8"),  # RFC 1918
    ipaddress.IPv4Network("172.16.0.0/12"),  # RFC 1918
    ipaddress.IPv4Network("192.168.0.0/16"),  # RFC 1918
    ipaddress.IPv4Network("100.64.0.0/10"),  # RFC 6598 shared address space (CGNAT)
    ipaddress.IPv6Network("fc00::/7"),  # RFC 4193 unique local
    ipaddress.IPv6Network("fec0::/10"),  # RFC 3879 deprecated site-local, still routed by some stacks
)
# RFC 6052 §2.1 well-known NAT64 prefix: the last 32 bits are the IPv4 destination.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 4291 §2.5.5.1 deprecated IPv4-compatible addresses; some stacks still route them over IPv4.
_IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 destination an IPv6 address really reaches, for the forms that embed one."""
    if address.ipv4_mapped is not None:  # RFC 4291 §2.5.5.2 ::ffff:a.b.c.d
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:  # RFC 3056 2002:aabb:ccdd::/48
        return address.sixtofour
    return None


def classify_address(address: IPAddress) -> AddressKind:
    """Which kind of destination `address` is, looking through IPv6 forms that embed an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return classify_address(embedded)
    if address.is_unspecified or address in _THIS_NETWORK:
        return AddressKind.UNSPECIFIED
    if address.is_loopback:
        return AddressKind.LOOPBACK
    if address.is_link_local:
        # 169.254.0.0/16 and fe80::/10: cloud metadata services (169.254.169.254, fd00:ec2::254 aside).
        return AddressKind.LINK_LOCAL
    if address.is_multicast:
        return AddressKind.MULTICAST
    if any(address in network for network in _PRIVATE_NETWORKS):
        return AddressKind.PRIVATE
    if address.is_reserved or address in _IPV4_COMPATIBLE:
        return AddressKind.RESERVED
    if not address.is_global:
        # Documentation, benchmarking, IETF protocol assignments, Teredo, ... (IANA special-purpose).
        return AddressKind.NON_GLOBAL
    return AddressKind.GLOBAL


@dataclass(frozen=True)
class AddressPolicy:
    """Which destinations outbound fetches may connect to. Only public addresses unless opted in.

    `allow_loopback` and `allow_private` exist for development and tests; link-local, unspecified,
    multicast and reserved addresses are refused whatever the flags say. `require_loopback` narrows
    the policy to loopback only, for plain-http development fetches.
    """

    allow_loopback: bool = False
    allow_private: bool = False
    require_loopback: bool = False

    def check(self, ip: str) -> None:
        """Raise BlockedAddressError unless a connection to `ip` is allowed."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise BlockedAddressError(f"{ip!r} is not an IP address") from None
        kind = classify_address(address)
        if self.require_loopback:
            if kind is AddressKind.LOOPBACK and self.allow_loopback:
                return
            raise BlockedAddressError(f"{address} is not an allowed loopback address")
        if kind is AddressKind.GLOBAL:
            return
        if kind is AddressKind.LOOPBACK and self.allow_loopback:
            return
        if kind is AddressKind.PRIVATE and self.allow_private:
            return
        raise BlockedAddressError(f"{address} is a {kind.value} address; outbound fetches may not reach it")


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore backend that resolves, vets every address, then connects to a vetted IP literal."""

    def __init__(
        self, resolver: Resolver, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolver = resolver
        self._policy = policy
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._vetted_addresses(host, port, timeout)
        last_error: Exception | None = None
        for address in addresses:
            try:
                # Connect to the IP we checked, never to the name: this is what pins the DNS answer.
                # httpcore calls start_tls on the returned stream with the original host name.
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error or FetchError(f"could not connect to {host!r}")

    async def _vetted_addresses(self, host: str, port: int, time_limit: float | None) -> list[str]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                addresses = await asyncio.wait_for(self._resolver.resolve(host, port), time_limit)
            except TimeoutError:
                raise FetchError(f"resolving {host!r} timed out") from None
        else:
            addresses = [host]  # a literal IP in the URL goes through the same policy
        if not addresses:
            raise FetchError(f"{host!r} did not resolve to any address")
        # Every answer is checked before any connection: a name that resolves to one public and one
        # internal address is refused outright rather than "usually" reaching the public one.
        for address in addresses:
            self._policy.check(address)
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise FetchError("unix socket connections are not allowed for outbound fetches")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def default_ssl_context() -> ssl.SSLContext:
    """The same trust store httpx uses by default (certifi), without reading SSL_CERT_* from the env."""
    return ssl.create_default_context(cafile=certifi.where())


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (exception mapping, streaming), with its connection pool swapped for one
    that uses the guarded backend. No proxies, no HTTP/2, no retries."""

    def __init__(self, backend: GuardedNetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False, http1=True, http2=False, retries=0)
        if not isinstance(vars(self).get("_pool"), httpcore.AsyncConnectionPool):
            # httpx 0.28 keeps its pool in `_pool`; if that ever changes, refuse to build a transport
            # that would silently connect without the guard.
            raise RuntimeError("unsupported httpx version: cannot install the SSRF guard")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=10,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )


def guarded_client(
    *,
    resolver: Resolver,
    policy: AddressPolicy,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """An httpx client whose every connection passes the SSRF guard.

    Redirects are not followed (a redirect is just another URL to vet, and callers decide), and
    `trust_env=False` keeps HTTP(S)_PROXY / SSL_CERT_FILE from the environment out of the picture: a
    proxy would make the connection, and the policy would be checking the wrong address.
    `network_backend` is the backend the guard connects with once an address is vetted (tests).
    """
    backend = GuardedNetworkBackend(resolver, policy, network_backend)
    transport = _GuardedTransport(backend, ssl_context or default_ssl_context())
    return httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout)
    )


@dataclass(frozen=True)
class FetchedDocument:
    url: str
    status: int
    headers: httpx.Headers
    body: bytes


def _checked_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchError(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError("only absolute http and https URLs can be fetched")
    return parsed


def _check_declared_length(response: httpx.Response, max_bytes: int) -> None:
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise ResponseTooLargeError(f"response declares {int(declared)} bytes; the limit is {max_bytes}")


def _check_identity_encoding(response: httpx.Response) -> None:
    # We ask for identity: the limit must apply to the bytes we parse, and a compressed body could
    # inflate far beyond it (a decompression bomb) before any check ran.
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(f"response uses content-encoding {encoding!r}; only identity is accepted")


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise ResponseTooLargeError(f"response is larger than {max_bytes} bytes")
    return bytes(body)


async def fetch_limited(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    total_timeout: float | None = None,
) -> FetchedDocument:
    """GET `url`, reading at most `max_bytes` of body; raise FetchError on any failure or refusal.

    Any status is returned (redirects included, unfollowed); judging it is the caller's business.
    `total_timeout` bounds the whole exchange, so a server trickling bytes cannot hold us for
    max_bytes times the read timeout.
    """
    target = _checked_url(url)
    request_headers = {**(headers or {}), "Accept-Encoding": "identity"}
    try:
        async with asyncio.timeout(total_timeout):
            async with client.stream("GET", target, headers=request_headers) as response:
                _check_declared_length(response, max_bytes)
                _check_identity_encoding(response)
                body = await _read_limited(response, max_bytes)
    except TimeoutError:
        raise FetchError(f"fetching {url} timed out") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from exc
    return FetchedDocument(url=url, status=response.status_code, headers=response.headers, body=body)
