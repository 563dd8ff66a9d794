"""Client ID Metadata Documents: URL rules, fetching through the SSRF guard, validation and caching.

Documents are served by a tiny HTTP(S) server on 127.0.0.1; host names reach it through a fake
resolver, and a recording backend proves which connections were (not) attempted. Nothing leaves
the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.net.ssrf import AddressPolicy
from chamberlain.oauth.cimd import ClientMetadataDocumentResolver, freshness_lifetime
from chamberlain.oauth.errors import INVALID_CLIENT, OAuthError
from tests.support.network import FakeResolver, RecordingBackend, Route, TinyServer, start_tls_server

# --- test doubles (the network ones are shared, in tests/support/network.py) ---------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


HOST = "client.test"
DEV_POLICY = AddressPolicy(allow_loopback=True)


@pytest.fixture
async def server() -> AsyncIterator[TinyServer]:
    async with TinyServer() as instance:
        yield instance


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _url(server: TinyServer, path: str = "/oauth/client.json") -> str:
    return f"http://{HOST}:{server.port}{path}"


def _document(client_id: str, **members: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "client_id": client_id,
        "client_name": "Example MCP Client",
        "redirect_uris": ["http://127.0.0.1:3000/callback", "http://localhost:3000/callback"],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    document.update(members)
    return {name: value for name, value in document.items() if value is not None}


def _serve(
    server: TinyServer, url: str, document: object, headers: dict[str, str] | None = None, status: int = 200
) -> None:
    server.routes[httpx.URL(url).raw_path.decode()] = Route(
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
        body=json.dumps(document).encode(),
    )


def _resolver(
    *, clock: FakeClock | None = None, table: dict[str, list[str]] | None = None, **kwargs: Any
) -> tuple[ClientMetadataDocumentResolver, RecordingBackend]:
    backend = RecordingBackend(httpcore.AnyIOBackend())
    resolver = ClientMetadataDocumentResolver(
        FakeResolver(table or {HOST: ["127.0.0.1"]}),
        kwargs.pop("policy", DEV_POLICY),
        clock=clock or FakeClock(),
        allow_http_loopback=kwargs.pop("allow_http_loopback", True),
        network_backend=backend,
        **kwargs,
    )
    return resolver, backend


async def _refused(resolver: ClientMetadataDocumentResolver, client_id: str) -> str:
    with pytest.raises(OAuthError) as caught:
        await resolver.resolve(client_id)
    assert caught.value.error == INVALID_CLIENT
    assert caught.value.description
    return caught.value.description


# --- which client_ids are document URLs -----------------------------------------------------------

# A production resolver: no http, no private networks; `accepts` never touches the network.
is_client_id_url = ClientMetadataDocumentResolver(FakeResolver({}), AddressPolicy()).accepts


@pytest.mark.parametrize(
    "client_id",
    [
        "https://app.example.com/oauth/client-metadata.json",
        "https://example.com/client.json",
        "https://example.com:8443/c",
        "https://example.com/c?version=2",
    ],
)
def test_client_id_urls(client_id: str) -> None:
    assert is_client_id_url(client_id)


@pytest.mark.parametrize(
    "client_id",
    [
        "s6BhdRkqt3",
        "https://example.com",
        "https://example.com/",
        "https://example.com?x=1",
        "http://example.com/client.json",
        "https://example.com/client.json#frag",
        "https://user@example.com/client.json",
        "https://user:pw@example.com/client.json",
        "https://example.com/a/../client.json",
        "https://example.com/./client.json",
        "https://example.com/a/%2e%2e/client.json",
        "https:///client.json",
        "https://example.com:99999/client.json",
        "https://example.com/cli ent.json",
        "https://exämple.com/client.json",
        "https://example.com/" + "a" * 2000,
        "",
    ],
)
def test_not_client_id_urls(client_id: str) -> None:
    assert not is_client_id_url(client_id)


@given(st.text(), st.text())
def test_no_url_with_a_fragment_is_a_client_id(path: str, fragment: str) -> None:
    assert not is_client_id_url(f"https://example.com/{path}#{fragment}")


@given(st.text())
def test_is_client_id_url_never_raises(text: str) -> None:
    is_client_id_url(text)


# --- freshness_lifetime (RFC 9111) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 60.0),
        ({"Cache-Control": "max-age=300"}, 300.0),
        ({"Cache-Control": "public, MAX-AGE=300"}, 300.0),
        ({"Cache-Control": 'max-age="300"'}, 300.0),
        ({"Cache-Control": "max-age=300", "Age": "100"}, 200.0),
        ({"Cache-Control": "max-age=300", "Age": "1000"}, 0.0),
        ({"Cache-Control": "max-age=abc"}, 0.0),
        ({"Cache-Control": "max-age=300", "Expires": "Thu, 01 Jan 2099 00:00:00 GMT"}, 300.0),
        ({"Expires": "Wed, 21 Oct 2015 07:28:00 GMT", "Date": "Wed, 21 Oct 2015 07:18:00 GMT"}, 600.0),
        ({"Expires": "0", "Date": "Wed, 21 Oct 2015 07:18:00 GMT"}, 0.0),
        ({"Expires": "Wed, 21 Oct 2015 07:28:00 GMT", "Date": "Wed, 21 Oct 2015 08:00:00 GMT"}, 0.0),
        ({"Cache-Control": "no-store"}, None),
        ({"Cache-Control": "max-age=300, no-store"}, None),
        ({"Cache-Control": "no-cache"}, None),
    ],
)
def test_freshness_lifetime(headers: dict[str, str], expected: float | None) -> None:
    assert freshness_lifetime(httpx.Headers(headers), default=60) == expected


def test_expires_without_date_uses_the_wall_clock() -> None:
    headers = httpx.Headers({"Expires": "Wed, 21 Oct 2015 07:28:00 GMT"})
    wall = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC).timestamp()
    assert freshness_lifetime(headers, default=60, now=lambda: wall) == 60.0


# --- resolving documents ------------------------------------------------------------------------


async def test_resolves_a_valid_document(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url, logo_uri="https://client.example/logo.png", unknown_member=1))
    resolver, backend = _resolver()
    metadata = await resolver.resolve(url)
    assert metadata.client_name == "Example MCP Client"
    assert metadata.redirect_uris == ["http://127.0.0.1:3000/callback", "http://localhost:3000/callback"]
    assert metadata.token_endpoint_auth_method == "none"
    assert backend.attempts == [("127.0.0.1", server.port)]


async def test_omitted_auth_method_means_a_public_client(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url, token_endpoint_auth_method=None))
    resolver, _ = _resolver()
    assert (await resolver.resolve(url)).is_public


async def test_private_key_jwt_document(server: TinyServer) -> None:
    url = _url(server)
    _serve(
        server,
        url,
        _document(url, token_endpoint_auth_method="private_key_jwt", jwks_uri="https://client.example/jwks.json"),
    )
    resolver, _ = _resolver()
    assert (await resolver.resolve(url)).token_endpoint_auth_method == "private_key_jwt"


async def test_more_specific_json_media_type_is_accepted(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url), {"Content-Type": "application/vnd.example+json; charset=utf-8"})
    resolver, _ = _resolver()
    await resolver.resolve(url)


async def test_https_document_with_the_default_settings(tmp_path: Path) -> None:
    """The production path: https only, the certificate checked against the client_id's host name."""
    tls_server, cert_path = await start_tls_server(tmp_path, HOST)
    try:
        url = f"https://{HOST}:{tls_server.port}/oauth/client.json"
        _serve(tls_server, url, _document(url))
        resolver, backend = _resolver(
            allow_http_loopback=False, ssl_context=ssl.create_default_context(cafile=str(cert_path))
        )
        metadata = await resolver.resolve(url)
    finally:
        await tls_server.stop()
    assert metadata.client_name == "Example MCP Client"
    assert backend.attempts == [("127.0.0.1", tls_server.port)]


# --- refused before any connection ----------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.5",
        "192.168.1.1",
        "172.16.0.1",
        "169.254.169.254",
        "fe80::1",
        "::ffff:10.0.0.1",
        "100.64.0.1",
        "0.0.0.0",
    ],
)
async def test_documents_on_internal_addresses_are_refused_before_connecting(ip: str) -> None:
    resolver, backend = _resolver(table={"evil.test": [ip]}, allow_http_loopback=False)
    description = await _refused(resolver, "https://evil.test/client.json")
    assert "could not be retrieved" in description
    assert ip not in description  # no internal-DNS oracle on the error page
    assert backend.attempts == []


async def test_host_with_one_public_and_one_private_address_is_refused() -> None:
    resolver, backend = _resolver(table={"evil.test": ["93.184.216.34", "10.0.0.5"]}, allow_http_loopback=False)
    await _refused(resolver, "https://evil.test/client.json")
    assert backend.attempts == []


async def test_loopback_is_refused_under_the_production_policy() -> None:
    resolver, backend = _resolver(policy=AddressPolicy(), allow_http_loopback=False)
    await _refused(resolver, f"https://{HOST}/client.json")
    assert backend.attempts == []


@pytest.mark.parametrize("ip", ["10.0.0.5", "93.184.216.34"])
async def test_plain_http_is_only_for_loopback(ip: str) -> None:
    resolver, backend = _resolver(
        table={"dev.test": [ip]}, policy=AddressPolicy(allow_loopback=True, allow_private=True)
    )
    await _refused(resolver, "http://dev.test/client.json")
    assert backend.attempts == []


async def test_plain_http_is_refused_without_the_development_flag(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url))
    resolver, backend = _resolver(allow_http_loopback=False)
    assert "https" in await _refused(resolver, url)
    assert backend.attempts == []
    assert server.hits == Counter()


@pytest.mark.parametrize(
    "client_id", ["https://example.com/", "https://example.com/c#x", "https://u@example.com/c", "not a url"]
)
async def test_malformed_client_ids_are_refused_without_fetching(client_id: str) -> None:
    resolver, backend = _resolver()
    await _refused(resolver, client_id)
    assert backend.attempts == []


# --- document validation --------------------------------------------------------------------------


async def test_oversize_document_is_refused(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url, padding="x" * 6000))
    resolver, _ = _resolver()
    assert "larger than 5120 bytes" in await _refused(resolver, url)


@pytest.mark.parametrize(
    "other",
    [
        "http://client.test/oauth/client.json",
        "http://client.test:{port}/oauth/client.json/",
        "http://client.test:{port}/OAUTH/client.json",
        "http://CLIENT.test:{port}/oauth/client.json",
        "http://evil.test:{port}/oauth/client.json",
    ],
)
async def test_client_id_mismatch_is_refused(server: TinyServer, other: str) -> None:
    url = _url(server)
    _serve(server, url, _document(other.format(port=server.port)))
    resolver, _ = _resolver()
    assert "does not match" in await _refused(resolver, url)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "client_secret_jwt"])
async def test_shared_secret_auth_methods_are_refused(server: TinyServer, method: str) -> None:
    url = _url(server)
    _serve(server, url, _document(url, token_endpoint_auth_method=method))
    resolver, _ = _resolver()
    assert "shared-secret" in await _refused(resolver, url)


@pytest.mark.parametrize("member", ["client_secret", "client_secret_expires_at"])
async def test_secret_members_are_refused(server: TinyServer, member: str) -> None:
    url = _url(server)
    _serve(server, url, _document(url, **{member: 0 if member.endswith("_at") else "s3cret"}))
    resolver, _ = _resolver()
    assert member in await _refused(resolver, url)


@pytest.mark.parametrize("member", ["client_id", "client_name", "redirect_uris"])
async def test_required_members(server: TinyServer, member: str) -> None:
    url = _url(server)
    document = _document(url)
    del document[member]
    _serve(server, url, document)
    resolver, _ = _resolver()
    assert member in await _refused(resolver, url)


async def test_invalid_metadata_is_refused_with_the_reason(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url, redirect_uris=["javascript:alert(1)"]))
    resolver, _ = _resolver()
    assert "javascript" in await _refused(resolver, url)


async def test_wrong_typed_auth_method_is_refused(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url, token_endpoint_auth_method=["none"]))
    resolver, _ = _resolver()
    await _refused(resolver, url)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (Route(404, {"Content-Type": "application/json"}, b"{}"), "HTTP 404"),
        (Route(500, {"Content-Type": "application/json"}, b"{}"), "HTTP 500"),
        (Route(302, {"Location": "https://elsewhere.example/c.json"}, b""), "redirect"),
        (Route(200, {"Content-Type": "text/html"}, b"<html></html>"), "application/json"),
        (Route(200, {}, b"{}"), "application/json"),
        (Route(200, {"Content-Type": "application/json"}, b"{not json"), "not valid JSON"),
        (Route(200, {"Content-Type": "application/json"}, b"\xff\xfe{}"), "not valid JSON"),
        (Route(200, {"Content-Type": "application/json"}, b'{"a": NaN}'), "not valid JSON"),
        (Route(200, {"Content-Type": "application/json"}, b"[]"), "JSON object"),
    ],
)
async def test_bad_responses_are_refused(server: TinyServer, route: Route, expected: str) -> None:
    url = _url(server)
    server.routes["/oauth/client.json"] = route
    resolver, _ = _resolver()
    assert expected in await _refused(resolver, url)


async def test_duplicate_members_are_refused(server: TinyServer) -> None:
    url = _url(server)
    body = json.dumps(_document(url))[:-1] + ', "client_id": "http://evil.test/c.json"}'
    server.routes["/oauth/client.json"] = Route(body=body.encode())
    resolver, _ = _resolver()
    await _refused(resolver, url)


# --- caching ----------------------------------------------------------------------------------------


async def test_cache_control_max_age_is_honoured(server: TinyServer, clock: FakeClock) -> None:
    url = _url(server)
    _serve(server, url, _document(url), {"Cache-Control": "max-age=300"})
    resolver, _ = _resolver(clock=clock)
    first = await resolver.resolve(url)
    clock.now += 299
    assert await resolver.resolve(url) == first
    assert server.hits["/oauth/client.json"] == 1
    clock.now += 2
    await resolver.resolve(url)
    assert server.hits["/oauth/client.json"] == 2


@pytest.mark.parametrize("directive", ["no-store", "no-cache"])
async def test_no_store_is_never_cached(server: TinyServer, clock: FakeClock, directive: str) -> None:
    url = _url(server)
    _serve(server, url, _document(url), {"Cache-Control": directive})
    resolver, _ = _resolver(clock=clock)
    await resolver.resolve(url)
    await resolver.resolve(url)
    assert server.hits["/oauth/client.json"] == 2


async def test_expires_is_honoured(server: TinyServer, clock: FakeClock) -> None:
    url = _url(server)
    headers = {"Date": "Wed, 21 Oct 2015 07:00:00 GMT", "Expires": "Wed, 21 Oct 2015 08:00:00 GMT"}
    _serve(server, url, _document(url), headers)
    resolver, _ = _resolver(clock=clock)
    await resolver.resolve(url)
    clock.now += 3599
    await resolver.resolve(url)
    assert server.hits["/oauth/client.json"] == 1
    clock.now += 2
    await resolver.resolve(url)
    assert server.hits["/oauth/client.json"] == 2


async def test_lifetimes_are_clamped(server: TinyServer, clock: FakeClock) -> None:
    short, long = _url(server, "/short.json"), _url(server, "/long.json")
    _serve(server, short, _document(short), {"Cache-Control": "max-age=1"})
    _serve(server, long, _document(long), {"Cache-Control": "max-age=999999999"})
    resolver, _ = _resolver(clock=clock, min_cache=60, max_cache=3600)
    await resolver.resolve(short)
    await resolver.resolve(long)
    clock.now += 59
    await resolver.resolve(short)
    assert server.hits["/short.json"] == 1  # kept for min_cache although max-age said 1
    clock.now += 3600
    await resolver.resolve(long)
    assert server.hits["/long.json"] == 2  # dropped after max_cache


async def test_failures_are_not_cached(server: TinyServer, clock: FakeClock) -> None:
    url = _url(server)
    _serve(server, url, _document("http://evil.test/c.json"), {"Cache-Control": "max-age=300"})
    resolver, _ = _resolver(clock=clock)
    await _refused(resolver, url)
    _serve(server, url, _document(url), {"Cache-Control": "max-age=300"})
    await resolver.resolve(url)
    assert server.hits["/oauth/client.json"] == 2


async def test_cache_is_bounded(server: TinyServer) -> None:
    first, second = _url(server, "/a.json"), _url(server, "/b.json")
    _serve(server, first, _document(first), {"Cache-Control": "max-age=300"})
    _serve(server, second, _document(second), {"Cache-Control": "max-age=300"})
    resolver, _ = _resolver(max_entries=1)
    await resolver.resolve(first)
    await resolver.resolve(second)
    await resolver.resolve(first)
    assert server.hits["/a.json"] == 2
    assert server.hits["/b.json"] == 1


# --- concurrency ------------------------------------------------------------------------------------


async def test_concurrent_resolutions_share_one_fetch(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, _document(url), {"Cache-Control": "no-store"})
    resolver, _ = _resolver()
    results = await asyncio.gather(*(resolver.resolve(url) for _ in range(5)))
    assert all(result == results[0] for result in results)
    assert server.hits["/oauth/client.json"] == 1


async def test_concurrent_failures_share_one_fetch(server: TinyServer) -> None:
    url = _url(server)
    _serve(server, url, {"not": "valid"})
    resolver, _ = _resolver()
    results = await asyncio.gather(*(resolver.resolve(url) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, OAuthError) and result.error == INVALID_CLIENT for result in results)
    assert server.hits["/oauth/client.json"] == 1


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(server: TinyServer) -> None:
    url = _url(server)
    gate = asyncio.Event()
    _serve(server, url, _document(url))
    server.routes["/oauth/client.json"].gate = gate
    resolver, _ = _resolver()
    impatient = asyncio.create_task(resolver.resolve(url))
    patient = asyncio.create_task(resolver.resolve(url))
    await server.request_arrived.wait()
    impatient.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await impatient
    gate.set()
    assert (await patient).client_name == "Example MCP Client"
    assert server.hits["/oauth/client.json"] == 1


def test_cache_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="min_cache"):
        ClientMetadataDocumentResolver(FakeResolver({}), AddressPolicy(), min_cache=100, max_cache=10)
