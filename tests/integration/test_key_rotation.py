"""`chamberlain keys rotate` on a running server: new tokens use the new key, old tokens keep working."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx

from chamberlain.crypto.master_key import load_master_key
from chamberlain.crypto.signing_keys import generate_signing_key
from chamberlain.store import keys as key_store
from tests.support.mcp_calls import MCP_HEADERS
from tests.support.server import RunningServer

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


async def service_token(http: httpx.AsyncClient, server: RunningServer, client: dict[str, str]) -> str:
    response = await http.post(
        "/token",
        data={"grant_type": "client_credentials", "resource": server.resource()},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_rotation_switches_signing_and_keeps_old_tokens_valid(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        registered = await http.post(
            "/register",
            json={
                "client_name": "rotation test",
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        )
        assert registered.status_code == 201, registered.text
        client = registered.json()
        old_token = await service_token(http, server, client)
        old_kids = {key["kid"] for key in (await http.get("/jwks.json")).json()["keys"]}
        assert kid_of(old_token) in old_kids

        async with server.engine() as engine:
            new_key = generate_signing_key("ES256", load_master_key(server.settings.data_dir))
            await key_store.rotate(engine, new_key, keep_verifying_for=600)

        for _ in range(100):  # the server picks the new ring up within its refresh interval
            kids = {key["kid"] for key in (await http.get("/jwks.json")).json()["keys"]}
            if new_key.kid in kids:
                break
            await asyncio.sleep(0.1)
        assert kids >= old_kids | {new_key.kid}

        # Published first, signing a moment later (crypto/signing_keys.py PUBLISH_BEFORE_SIGNING): by then every
        # replica knows it.
        for _ in range(100):
            new_token = await service_token(http, server, client)
            if kid_of(new_token) == new_key.kid:
                break
            assert kid_of(new_token) in old_kids
            await asyncio.sleep(0.1)
        assert kid_of(new_token) == new_key.kid
        for token in (old_token, new_token):
            answer = await http.post(
                "/mcp/demo", json=PING, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
            )
            # Verified with its key (else 401); a client-credentials token has no roles, so policy says 403.
            assert answer.status_code == 403, answer.text
            assert "roles" in answer.json()["error_description"]
