"""Small OAuth client helpers for tests: registration, PKCE, authorization URLs, token requests, and codes and tokens
obtained through a whole sign-in and consent."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.support.browser import Browser
from tests.support.server import RunningServer

REDIRECT_URI = "http://127.0.0.1:53682/callback"


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        return cls(verifier, challenge)


async def register(http: httpx.AsyncClient, **metadata: Any) -> dict[str, Any]:
    body = {
        "client_name": "test client",
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        **metadata,
    }
    response = await http.post("/register", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def authorization_url(client_id: str, resource: str, pkce: Pkce | None, **params: str) -> str:
    query: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "state": secrets.token_urlsafe(8),
        "resource": resource,
        "scope": "mcp:tools",
    }
    if pkce is not None:
        query |= {"code_challenge": pkce.challenge, "code_challenge_method": "S256"}
    query |= params
    return "/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})


def redirect_params(response: httpx.Response) -> dict[str, str]:
    status = response.status_code
    assert status == 302, f"expected a redirect to the client, got {status}: {response.text[:300]}"
    return {key: values[0] for key, values in parse_qs(urlsplit(response.headers["location"]).query).items()}


async def exchange_code(
    http: httpx.AsyncClient, client_id: str, code: str, verifier: str | None, **extra: str
) -> httpx.Response:
    data = {"grant_type": "authorization_code", "client_id": client_id, "code": code, "redirect_uri": REDIRECT_URI}
    if verifier is not None:
        data["code_verifier"] = verifier
    return await http.post("/token", data={**data, **extra})


async def refresh(http: httpx.AsyncClient, client_id: str, refresh_token: str, **extra: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token}
    return await http.post("/token", data={**data, **extra})


async def authorized_code(server: RunningServer, client_id: str, pkce: Pkce | None, **params: str) -> str:
    """An authorization code for `client_id`, got by the test user signing in and consenting in a fresh browser."""
    url = authorization_url(client_id, server.resource(), pkce, **params)
    async with Browser(server.base_url) as browser:
        redirect = await browser.authorize(url, username=server.user, password=server.user_password)
    return redirect_params(redirect)["code"]


async def tokens_for(server: RunningServer, http: httpx.AsyncClient, client_id: str) -> dict[str, Any]:
    """The token response (access and refresh token) for a fresh authorization of `client_id`, PKCE included."""
    pkce = Pkce.new()
    code = await authorized_code(server, client_id, pkce)
    response = await exchange_code(http, client_id, code, pkce.verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())
