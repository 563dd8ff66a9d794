"""The SSRF guard: address policy, resolver seam, pinned connections and size-limited fetches.

Nothing here leaves the machine: host names resolve through a fake resolver, the only server listens
on 127.0.0.1, and every connection goes through a recording backend that refuses non-loopback targets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.net.ssrf import (
    AddressKind,
    AddressPolicy,
    BlockedAddressError,
    FetchError,
    GuardedNetworkBackend,
    ResponseTooLargeError,
    SystemResolver,
    classify_address,
    fetch_limited,
    guarded_client,
)
from tests.support.network import FakeResolver, RecordingBackend, Route, TinyServer, start_tls_server


@pytest.fixture
async def server() -> AsyncIterator[TinyServer]:
    async with TinyServer() as instance:
        yield instance


LOOPBACK_DEV = AddressPolicy(allow_loopback=True)

# --- AddressPolicy --------------------------------------------------------------------------------

ALWAYS_BLOCKED = [
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "fe80::1",
    "fe80::1%eth0",
    "::ffff:169.254.169.254",
    "0.0.0.0",
    "0.1.2.3",
    "::",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "2001:db8::1",
    "::a00:1",  # deprecated IPv4-compatible
    "2001::1",  # Teredo
]
PRIVATE = [
    "10.0.0.5",
    "192.168.1.1",
    "172.16.0.1",
    "172.31.255.255",
    "100.64.0.1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "::ffff:10.0.0.1",
    "::ffff:192.168.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
]
LOOPBACK = ["127.0.0.1", "127.5.5.5", "::1", "::ffff:127.0.0.1"]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("ip", ALWAYS_BLOCKED + PRIVATE + LOOPBACK + ["not-an-ip", "", "127.1", "10.0.0.1/8"])
def test_default_policy_blocks_non_public_addresses(ip: str) -> None:
    with pytest.raises(BlockedAddressError):
        AddressPolicy().check(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_default_policy_allows_public_addresses(ip: str) -> None:
    AddressPolicy().check(ip)


@pytest.mark.parametrize("ip", ALWAYS_BLOCKED)
def test_development_flags_never_open_link_local_or_unspecified(ip: str) -> None:
    with pytest.raises(BlockedAddressError):
        AddressPolicy(allow_loopback=True, allow_private=True).check(ip)


@pytest.mark.parametrize("ip", LOOPBACK)
def test_allow_loopback(ip: str) -> None:
    AddressPolicy(allow_loopback=True).check(ip)
    with pytest.raises(BlockedAddressError):
        AddressPolicy(allow_private=True).check(ip)


@pytest.mark.parametrize("ip", PRIVATE)
def test_allow_private(ip: str) -> None:
    AddressPolicy(allow_private=True).check(ip)
    with pytest.raises(BlockedAddressError):
        AddressPolicy(allow_loopback=True).check(ip)


@pytest.mark.parametrize("ip", PUBLIC + PRIVATE)
def test_require_loopback_refuses_everything_else(ip: str) -> None:
    with pytest.raises(BlockedAddressError):
        AddressPolicy(allow_loopback=True, allow_private=True, require_loopback=True).check(ip)
    AddressPolicy(allow_loopback=True, require_loopback=True).check("127.0.0.1")
    with pytest.raises(BlockedAddressError):
        AddressPolicy(require_loopback=True).check("127.0.0.1")


def test_error_message_names_the_kind_of_address() -> None:
    with pytest.raises(BlockedAddressError, match="link-local"):
        AddressPolicy().check("169.254.169.254")
    with pytest.raises(BlockedAddressError, match="private"):
        AddressPolicy().check("::ffff:10.0.0.1")


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_and_nat64_forms_are_judged_like_the_ipv4_address(address: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    assert classify_address(mapped) == classify_address(address)
    assert classify_address(nat64) == classify_address(address)


@given(st.ip_addresses())
def test_only_global_addresses_pass_the_default_policy(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    try:
        AddressPolicy().check(str(address))
    except BlockedAddressError:
        assert classify_address(address) is not AddressKind.GLOBAL
    else:
        assert classify_address(address) is AddressKind.GLOBAL
        assert not address.is_private or isinstance(address, ipaddress.IPv6Address)


@given(st.integers(0, 2**16 - 1))
def test_every_link_local_ipv4_address_is_blocked_under_every_policy(offset: int) -> None:
    address = str(ipaddress.IPv4Address("169.254.0.0") + offset)
    for policy in (AddressPolicy(), AddressPolicy(allow_loopback=True, allow_private=True)):
        with pytest.raises(BlockedAddressError):
            policy.check(address)


# --- guarded fetches: refused before any connection -----------------------------------------------


@pytest.mark.parametrize("ip", ["10.0.0.5", "192.168.1.1", "172.16.0.1", "169.254.169.254", "fe80::1",
                                "::ffff:10.0.0.1", "100.64.0.1", "0.0.0.0", "127.0.0.1", "::1"])  # fmt: skip
async def test_host_resolving_to_an_internal_address_is_refused_before_connecting(ip: str) -> None:
    backend = RecordingBackend()
    resolver = FakeResolver({"evil.test": [ip]})
    async with guarded_client(resolver=resolver, policy=AddressPolicy(), timeout=5, network_backend=backend) as client:
        with pytest.raises(BlockedAddressError):
            await fetch_limited(client, "https://evil.test/doc.json", max_bytes=1024)
    assert resolver.calls == ["evil.test"]
    assert backend.attempts == []


@pytest.mark.parametrize("answers", [["93.184.216.34", "10.0.0.5"], ["10.0.0.5", "93.184.216.34"]])
async def test_one_public_and_one_private_answer_is_refused(answers: list[str]) -> None:
    backend = RecordingBackend()
    resolver = FakeResolver({"mixed.test": answers})
    async with guarded_client(resolver=resolver, policy=AddressPolicy(), timeout=5, network_backend=backend) as client:
        with pytest.raises(BlockedAddressError):
            await fetch_limited(client, "https://mixed.test/doc.json", max_bytes=1024)
    assert backend.attempts == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://[fe80::1]/",
        "http://10.0.0.1:8080/",
        "https://127.0.0.1/",
        "http://0.0.0.0:80/",
    ],
)
async def test_literal_ip_urls_go_through_the_same_check(url: str) -> None:
    backend = RecordingBackend()
    resolver = FakeResolver({})
    async with guarded_client(resolver=resolver, policy=AddressPolicy(), timeout=5, network_backend=backend) as client:
        with pytest.raises(BlockedAddressError):
            await fetch_limited(client, url, max_bytes=1024)
    assert resolver.calls == []
    assert backend.attempts == []


@pytest.mark.parametrize("url", ["ftp://files.test/doc", "file:///etc/passwd", "gopher://x.test/", "/relative"])
async def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    backend = RecordingBackend()
    resolver = FakeResolver({"files.test": ["93.184.216.34"], "x.test": ["93.184.216.34"]})
    async with guarded_client(resolver=resolver, policy=AddressPolicy(), timeout=5, network_backend=backend) as client:
        with pytest.raises(FetchError):
            await fetch_limited(client, url, max_bytes=1024)
    assert backend.attempts == []


async def test_unknown_host_is_a_fetch_error() -> None:
    backend = RecordingBackend()
    async with guarded_client(
        resolver=FakeResolver({}), policy=AddressPolicy(), timeout=5, network_backend=backend
    ) as client:
        with pytest.raises(FetchError, match="unknown host"):
            await fetch_limited(client, "https://nowhere.test/doc", max_bytes=1024)
    assert backend.attempts == []


async def test_resolver_that_never_answers_times_out() -> None:
    class StuckResolver:
        async def resolve(self, host: str, port: int) -> list[str]:
            await asyncio.Event().wait()
            return []

    backend = RecordingBackend()
    async with guarded_client(
        resolver=StuckResolver(), policy=AddressPolicy(), timeout=0.05, network_backend=backend
    ) as client:
        with pytest.raises(FetchError):
            await fetch_limited(client, "https://stuck.test/doc", max_bytes=1024)
    assert backend.attempts == []


async def test_unix_sockets_are_refused() -> None:
    guard = GuardedNetworkBackend(FakeResolver({}), AddressPolicy(), RecordingBackend())
    with pytest.raises(FetchError):
        await guard.connect_unix_socket("/var/run/docker.sock")


async def test_system_resolver_resolves_numeric_hosts_without_dns() -> None:
    assert await SystemResolver().resolve("127.0.0.1", 80) == ["127.0.0.1"]


# --- guarded fetches over loopback ---------------------------------------------------------------


def _loopback_client(
    backend: RecordingBackend, resolver: FakeResolver | None = None, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    return guarded_client(
        resolver=resolver or FakeResolver({"pinned.test": ["127.0.0.1"]}),
        policy=LOOPBACK_DEV,
        timeout=5,
        ssl_context=ssl_context,
        network_backend=backend,
    )


async def test_connects_to_the_vetted_ip_not_the_name(server: TinyServer) -> None:
    server.routes["/doc.json"] = Route(body=b'{"ok": true}')
    backend = RecordingBackend(httpcore.AnyIOBackend())
    async with _loopback_client(backend) as client:
        fetched = await fetch_limited(client, f"http://pinned.test:{server.port}/doc.json", max_bytes=1024)
    assert fetched.status == 200
    assert fetched.body == b'{"ok": true}'
    assert fetched.headers["content-type"] == "application/json"
    assert backend.attempts == [("127.0.0.1", server.port)]
    # The request itself still names the host (virtual hosting), and asks for an unencoded body.
    assert server.request_headers[0]["host"] == f"pinned.test:{server.port}"
    assert server.request_headers[0]["accept-encoding"] == "identity"


async def test_dns_rebinding_cannot_swap_the_address_after_the_check(server: TinyServer) -> None:
    class RebindingResolver:
        def __init__(self) -> None:
            self.answers = [["127.0.0.1"], ["10.0.0.5"]]
            self.calls = 0

        async def resolve(self, host: str, port: int) -> list[str]:
            self.calls += 1
            return self.answers[min(self.calls - 1, 1)]

    server.routes["/doc.json"] = Route()
    backend = RecordingBackend(httpcore.AnyIOBackend())
    resolver = RebindingResolver()
    async with guarded_client(resolver=resolver, policy=LOOPBACK_DEV, timeout=5, network_backend=backend) as client:
        await fetch_limited(client, f"http://rebind.test:{server.port}/doc.json", max_bytes=1024)
        # One resolution per connection, and the connection used exactly that answer.
        assert resolver.calls == 1
        assert backend.attempts == [("127.0.0.1", server.port)]
        with pytest.raises(BlockedAddressError):
            await fetch_limited(client, f"http://rebind.test:{server.port}/doc.json", max_bytes=1024)
    assert backend.attempts == [("127.0.0.1", server.port)]


async def test_redirects_are_returned_not_followed(server: TinyServer) -> None:
    server.routes["/doc.json"] = Route(302, {"Location": f"http://pinned.test:{server.port}/other"}, b"")
    server.routes["/other"] = Route()
    async with _loopback_client(RecordingBackend(httpcore.AnyIOBackend())) as client:
        fetched = await fetch_limited(client, f"http://pinned.test:{server.port}/doc.json", max_bytes=1024)
    assert fetched.status == 302
    assert server.hits["/other"] == 0


async def test_declared_oversize_body_is_refused(server: TinyServer) -> None:
    server.routes["/big"] = Route(body=b"x" * 2000)
    async with _loopback_client(RecordingBackend(httpcore.AnyIOBackend())) as client:
        with pytest.raises(ResponseTooLargeError, match="declares 2000"):
            await fetch_limited(client, f"http://pinned.test:{server.port}/big", max_bytes=1999)
        fetched = await fetch_limited(client, f"http://pinned.test:{server.port}/big", max_bytes=2000)
    assert len(fetched.body) == 2000


async def test_undeclared_oversize_body_is_cut_off(server: TinyServer) -> None:
    server.routes["/stream"] = Route(body=b"x" * 100_000, send_length=False)
    async with _loopback_client(RecordingBackend(httpcore.AnyIOBackend())) as client:
        with pytest.raises(ResponseTooLargeError):
            await fetch_limited(client, f"http://pinned.test:{server.port}/stream", max_bytes=5000)


async def test_compressed_responses_are_refused(server: TinyServer) -> None:
    server.routes["/gz"] = Route(headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    async with _loopback_client(RecordingBackend(httpcore.AnyIOBackend())) as client:
        with pytest.raises(FetchError, match="content-encoding"):
            await fetch_limited(client, f"http://pinned.test:{server.port}/gz", max_bytes=5000)


async def test_proxy_settings_in_the_environment_are_ignored(
    server: TinyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    server.routes["/doc.json"] = Route()
    backend = RecordingBackend(httpcore.AnyIOBackend())
    async with _loopback_client(backend) as client:
        await fetch_limited(client, f"http://pinned.test:{server.port}/doc.json", max_bytes=1024)
    assert backend.attempts == [("127.0.0.1", server.port)]


async def test_connection_failure_is_a_fetch_error() -> None:
    # Nothing listens on this port once the listener is closed.
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with _loopback_client(RecordingBackend(httpcore.AnyIOBackend())) as client:
        with pytest.raises(FetchError):
            await fetch_limited(client, f"http://pinned.test:{port}/doc.json", max_bytes=1024)


# --- TLS keeps the host name while the socket goes to the pinned IP -------------------------------


async def test_tls_verifies_the_original_host_name(tmp_path: Path) -> None:
    tls_server, cert = await start_tls_server(tmp_path, "pinned.test")
    tls_server.routes["/doc.json"] = Route(body=b'{"tls": true}')
    backend = RecordingBackend(httpcore.AnyIOBackend())
    try:
        async with _loopback_client(backend, ssl_context=ssl.create_default_context(cafile=str(cert))) as client:
            fetched = await fetch_limited(client, f"https://pinned.test:{tls_server.port}/doc.json", max_bytes=1024)
    finally:
        await tls_server.stop()
    assert fetched.body == b'{"tls": true}'
    assert backend.attempts == [("127.0.0.1", tls_server.port)]


async def test_tls_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    tls_server, cert = await start_tls_server(tmp_path, "other.test")
    tls_server.routes["/doc.json"] = Route()
    try:
        async with _loopback_client(
            RecordingBackend(httpcore.AnyIOBackend()),
            ssl_context=ssl.create_default_context(cafile=str(cert)),
        ) as client:
            with pytest.raises(FetchError, match=r"(?i)certificate verify failed"):
                await fetch_limited(client, f"https://pinned.test:{tls_server.port}/doc.json", max_bytes=1024)
    finally:
        await tls_server.stop()
    assert tls_server.hits["/doc.json"] == 0
