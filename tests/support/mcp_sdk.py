"""Drives the official Python MCP SDK client (`mcp.client.Client` + `OAuthClientProvider`) headless against a
running Chamberlain: the redirect handler signs in and consents through the real HTML forms with `Browser`, and
every HTTP exchange the SDK makes (MCP requests and its own OAuth requests alike) is recorded."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.client import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from tests.support.browser import Browser, SignIn
from tests.support.server import RunningServer

SDK_REDIRECT_URI = "http://127.0.0.1:53683/callback"


class InMemoryTokenStorage:
    """A `TokenStorage` holding the tokens and the registered client's information on the instance."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass(frozen=True)
class Exchange:
    method: str
    url: str
    status: int
    www_authenticate: str | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


class RecordingTransport(httpx2.AsyncBaseTransport):
    """Wraps the real transport and records each request and its status, in order."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        self.exchanges.append(
            Exchange(request.method, str(request.url), response.status_code, response.headers.get("www-authenticate"))
        )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class HeadlessAuthorizer:
    """The SDK's redirect and callback handlers: a person signing in and clicking Allow, without a browser."""

    server: RunningServer
    sign_in: SignIn | None = None  # how the person signs in (default: the server's local user and password)
    authorization_urls: list[str] = field(default_factory=list)
    _result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        self.authorization_urls.append(authorization_url)
        async with Browser(self.server.base_url) as browser:
            response = await browser.authorize(
                authorization_url,
                username=self.server.user,
                password=self.server.user_password,
                sign_in=self.sign_in,
            )
        assert response.status_code == 302, f"authorization ended with {response.status_code}: {response.text[:300]}"
        location = response.headers["location"]
        assert location.startswith(SDK_REDIRECT_URI + "?"), location
        params = {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
        assert "error" not in params, params
        self._result = AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self._result is not None, "the redirect handler did not run"
        result, self._result = self._result, None
        return result


def client_metadata() -> OAuthClientMetadata:
    return OAuthClientMetadata(
        client_name="MCP Python SDK interop test",
        redirect_uris=[AnyUrl(SDK_REDIRECT_URI)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )


@dataclass
class SdkConnection:
    client: Client
    provider: OAuthClientProvider
    transport: RecordingTransport


@contextlib.asynccontextmanager
async def sdk_client(
    server: RunningServer,
    storage: InMemoryTokenStorage,
    authorizer: HeadlessAuthorizer,
    *,
    mode: str,
    server_name: str = "demo",
    provider: OAuthClientProvider | None = None,
    **client_options: Any,
) -> AsyncIterator[SdkConnection]:
    """An entered SDK `Client` for /mcp/{server_name}, authenticated by an `OAuthClientProvider`."""
    url = server.resource(server_name)
    if provider is None:
        provider = OAuthClientProvider(
            server_url=url,
            client_metadata=client_metadata(),
            storage=storage,
            redirect_handler=authorizer.redirect_handler,
            callback_handler=authorizer.callback_handler,
        )
    transport = RecordingTransport()
    timeout = httpx2.Timeout(30.0)
    async with (
        httpx2.AsyncClient(auth=provider, transport=transport, timeout=timeout) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, **client_options) as client,
    ):
        yield SdkConnection(client, provider, transport)


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded WITHOUT verifying it: only for checking what the server put in it."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
