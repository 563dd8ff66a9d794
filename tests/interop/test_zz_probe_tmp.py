import pytest
from tests.support.mcp_sdk import HeadlessAuthorizer, InMemoryTokenStorage, sdk_client

@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_probe(server, mode):
    storage = InMemoryTokenStorage(); a = HeadlessAuthorizer(server)
    async with sdk_client(server, storage, a, mode=mode) as c:
        await c.client.list_tools()
        print("\nPV", mode, c.client.protocol_version, c.client.server_info)
        print(a.authorization_urls[0])
        print(storage.tokens.scope, storage.client_info)
