"""Keys of private_key_jwt clients: inline jwks, or a jwks_uri fetched over TLS through the SSRF guard and cached."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from chamberlain.net.ssrf import AddressPolicy
from chamberlain.oauth.client_keys import CACHE_SECONDS, ClientKeySets
from chamberlain.oauth.client_metadata import ClientMetadata
from chamberlain.oauth.errors import OAuthError
from tests.support.network import FakeResolver, Route, start_tls_server

HOST = "keys.example"


def public_jwks() -> dict[str, object]:
    key = ECKey.generate_key("P-256", parameters={"kid": "client-key"})
    return {"keys": [key.as_dict(private=False)]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_inline_jwks_need_no_fetch() -> None:
    resolver = FakeResolver({})
    key_sets = ClientKeySets(resolver, AddressPolicy(), timeout=2)
    key_set = await key_sets.for_client(ClientMetadata(jwks=public_jwks()))
    assert [key.kid for key in key_set.keys] == ["client-key"]
    assert resolver.asked == []


async def test_jwks_uri_is_fetched_over_tls_and_cached(tmp_path: Path) -> None:
    server, certificate = await start_tls_server(tmp_path, HOST)
    try:
        server.routes["/jwks.json"] = Route(body=json.dumps(public_jwks()).encode())
        clock = Clock()
        key_sets = ClientKeySets(
            FakeResolver({HOST: ["127.0.0.1"]}),
            AddressPolicy(allow_loopback=True),
            timeout=5,
            clock=clock,
            ssl_context=ssl.create_default_context(cafile=certificate),
        )
        metadata = ClientMetadata(jwks_uri=f"https://{HOST}:{server.port}/jwks.json")
        first = await key_sets.for_client(metadata)
        await key_sets.for_client(metadata)
        assert [key.kid for key in first.keys] == ["client-key"]
        assert server.hits["/jwks.json"] == 1
        clock.now += CACHE_SECONDS + 1
        await key_sets.for_client(metadata)
        assert server.hits["/jwks.json"] == 2
    finally:
        await server.stop()


@pytest.mark.parametrize("address", ["169.254.169.254", "10.0.0.7", "127.0.0.1", "fe80::1"])
async def test_jwks_uri_on_a_private_address_is_refused_before_connecting(address: str) -> None:
    resolver = FakeResolver({HOST: [address]})
    key_sets = ClientKeySets(resolver, AddressPolicy(), timeout=2)
    with pytest.raises(OAuthError) as refused:
        await key_sets.for_client(ClientMetadata(jwks_uri=f"https://{HOST}/jwks.json"))
    assert refused.value.error == "invalid_client"
    assert refused.value.status_code == 401
    assert resolver.calls == [HOST]


async def test_a_key_set_that_is_not_json_is_refused(tmp_path: Path) -> None:
    server, certificate = await start_tls_server(tmp_path, HOST)
    try:
        server.routes["/jwks.json"] = Route(body=b"<html>not keys</html>")
        key_sets = ClientKeySets(
            FakeResolver({HOST: ["127.0.0.1"]}),
            AddressPolicy(allow_loopback=True),
            timeout=5,
            ssl_context=ssl.create_default_context(cafile=certificate),
        )
        with pytest.raises(OAuthError, match="JSON key set"):
            await key_sets.for_client(ClientMetadata(jwks_uri=f"https://{HOST}:{server.port}/jwks.json"))
    finally:
        await server.stop()


async def test_no_keys_at_all_is_refused() -> None:
    with pytest.raises(OAuthError, match="neither jwks nor jwks_uri"):
        await ClientKeySets(FakeResolver({}), AddressPolicy(), timeout=2).for_client(ClientMetadata())
