"""Serving an app over TLS with Chamberlain's transport (transport/tls.py), and TLS clients for tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from starlette.types import ASGIApp

from chamberlain.app import create_app
from chamberlain.settings import load_settings
from chamberlain.transport.tls import ServerTls, TlsConfig
from tests.support.certificates import Authority, Leaf
from tests.support.server import RunningServer, free_port
from tests.support.server import _prepare as prepare_server_store


@contextlib.contextmanager
def serving_tls(
    app: ASGIApp, port: int, tls: ServerTls, *, lifespan: Literal["auto", "on", "off"] = "off"
) -> Iterator[uvicorn.Server]:
    """As `chamberlain serve` with a `tls:` section: uvicorn with our TLS context and gate, in a thread."""
    config = TlsConfig(
        app, tls=tls, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan=lifespan
    )
    with serving_config(config) as server:
        yield server


@contextlib.contextmanager
def serving_config(config: uvicorn.Config, timeout: float = 30) -> Iterator[uvicorn.Server]:
    """uvicorn with `config` in a thread of its own until the block ends."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"tls-{config.port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the TLS server did not start on port {config.port}")
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def client_context(trusted: Authority, certificate: Leaf | None = None) -> ssl.SSLContext:
    """A client trusting `trusted` for the server, presenting `certificate` when given."""
    context = ssl.create_default_context(cadata=trusted.certificate_pem.decode("ascii"))
    if certificate is not None:
        with tempfile.TemporaryDirectory() as directory:
            certificate_file, key_file = certificate.write(Path(directory), "client")
            context.load_cert_chain(certificate_file, key_file)
    return context


def raw_get(port: int, context: ssl.SSLContext, path: str = "/") -> bytes:
    """Everything the server sends back for one GET (b"" when it closes without a byte); raises ssl.SSLError when
    the server ends the handshake with an alert (TLS 1.3 clients see the alert at their first read)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="127.0.0.1") as secure,
    ):
        secure.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        received = b""
        while True:
            try:
                chunk = secure.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                return received
            if not chunk:
                return received
            received += chunk


def refused(port: int, context: ssl.SSLContext) -> bool:
    """True when the server ends the connection without one HTTP byte: an alert, or (asyncio and uvloop close a
    transport whose handshake failed without flushing the alert) a plain close."""
    try:
        return raw_get(port, context) == b""
    except ssl.SSLError:
        return True


@contextlib.contextmanager
def running_tls_server(data_dir: Path, tls: dict[str, Any], **settings_values: Any) -> Iterator[RunningServer]:
    """A whole Chamberlain (SQLite store) as `chamberlain serve` with the `tls:` section `tls`, on https loopback."""
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    overrides: dict[str, Any] = {"port": port, "issuer": base_url, "tls": tls, **settings_values}
    settings = load_settings(data_dir=data_dir, overrides=overrides, environ={})
    admin_password = asyncio.run(prepare_server_store(settings))
    app = create_app(settings)
    with serving_tls(app, port, ServerTls(settings.tls), lifespan="on"):
        yield RunningServer(base_url, settings, admin_password, app)


def https_client(server: RunningServer, trusted: Authority, certificate: Leaf | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, verify=client_context(trusted, certificate), timeout=30)
