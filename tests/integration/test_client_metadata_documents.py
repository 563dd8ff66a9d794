"""Client ID Metadata Documents end to end: the client_id is a URL, the server fetches and trusts its document.

The document is served from loopback, which only a development setting allows (allow_private_networks);
the SSRF refusals for private and link-local targets are tested through the resolver seam elsewhere.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from chamberlain.store.clients import ClientRepository
from tests.support.browser import Browser
from tests.support.oauth import REDIRECT_URI, Pkce, authorization_url, exchange_code, redirect_params
from tests.support.server import RunningServer, running_server


class DocumentServer:
    def __init__(self) -> None:
        self.document: dict[str, object] = {}
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=300")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/oauth/client.json"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer()
    yield server
    server.http.shutdown()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp("cimd")
    with running_server(data_dir, registration={"allow_private_networks": True}) as running:
        yield running


async def test_a_metadata_document_client_completes_the_code_flow(
    dev_server: RunningServer, documents: DocumentServer
) -> None:
    documents.document = {
        "client_id": documents.url,
        "client_name": "Document Client",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    }
    pkce = Pkce.new()
    async with Browser(dev_server.base_url) as browser:
        page = await browser.follow_to_client(
            await browser.get(authorization_url(documents.url, dev_server.resource(), pkce))
        )
        signed = await browser.submit(page, {"username": dev_server.user, "password": dev_server.user_password})
        consent = await browser.follow_to_client(signed)
        assert "Document Client" in consent.text
        redirect = await browser.submit(consent, {"decision": "allow"})
    code = redirect_params(redirect)["code"]
    async with httpx.AsyncClient(base_url=dev_server.base_url) as http:
        tokens = await exchange_code(http, documents.url, code, pkce.verifier)
    assert tokens.status_code == 200, tokens.text
    assert documents.fetches == 1  # Cache-Control: max-age was honoured across authorize and token
    async with dev_server.engine() as engine:
        record = await ClientRepository(engine, dev_server.settings.tenant).get(documents.url)
    assert record is not None
    assert record.registration == "metadata_document"


async def test_a_document_whose_client_id_differs_from_its_url_is_refused(
    dev_server: RunningServer, documents: DocumentServer
) -> None:
    impostor = documents.url.replace("client.json", "impostor.json")
    documents.document = {
        "client_id": "https://someone-else.example/client.json",
        "client_name": "Impostor",
        "redirect_uris": [REDIRECT_URI],
    }
    async with Browser(dev_server.base_url) as browser:
        page = await browser.get(authorization_url(impostor, dev_server.resource(), Pkce.new()))
    assert page.status_code == 400
    assert "location" not in page.headers


async def test_production_settings_refuse_a_loopback_document(server: RunningServer, documents: DocumentServer) -> None:
    async with Browser(server.base_url) as browser:
        page = await browser.get(authorization_url(documents.url, server.resource(), Pkce.new()))
    assert page.status_code == 400
    assert "location" not in page.headers
