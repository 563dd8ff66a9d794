"""Network doubles for the SSRF guard and Client ID Metadata Document tests; nothing here leaves the machine.

Host names resolve through `FakeResolver` (never DNS), the only server (`TinyServer`) listens on 127.0.0.1, and
`RecordingBackend` records every connection attempt and refuses any target that is not loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpcore
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chamberlain.net.ssrf import FetchError


class FakeResolver:
    """The resolver seam: maps names to addresses from a table, never consults DNS, and remembers what it was asked.

    An unknown name is a `FetchError`, as from a resolver that found nothing.
    """

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[tuple[str, int]] = []

    @property
    def calls(self) -> list[str]:
        """The host names asked about, in order (`asked` without the ports)."""
        return [host for host, _ in self.asked]

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.table:
            raise FetchError(f"fake resolver: unknown host {host!r}")
        return list(self.table[host])


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records every connection attempt in `attempts`.

    Without an `inner` backend it refuses every connection; with one it connects, but to loopback only.
    """

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.inner = inner
        self.attempts: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        if self.inner is None:
            raise httpcore.ConnectError("test backend: no connections allowed")
        # Belt and braces: whatever the code under test does, the tests never leave this machine.
        assert ipaddress.ip_address(host).is_loopback, host
        return await self.inner.connect_tcp(host, port, timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class Route:
    """What `TinyServer` answers for one path.

    `send_length=False` leaves out Content-Length (the body then ends with the connection); a `gate` holds the
    answer back until the event is set.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes = b"{}"
    send_length: bool = True
    gate: asyncio.Event | None = None


class TinyServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that answers from a route table (404 elsewhere).

    It counts the hits per path, keeps each request's headers (names lower-cased), and sets `request_arrived` once
    a request has come in. Use it as `async with TinyServer() as server:`, or call `start` and `stop`.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.request_headers: list[dict[str, str]] = []
        self.request_arrived = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TinyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
            writer.close()
            return
        request_line, *lines = head.decode("latin-1").strip().split("\r\n")
        target = request_line.split(" ")[1]
        self.hits[target] += 1
        self.request_headers.append(
            {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        )
        self.request_arrived.set()
        route = self.routes.get(target, Route(404, {"Content-Type": "text/plain"}, b"not found"))
        if route.gate is not None:
            await route.gate.wait()
        headers = dict(route.headers)
        if route.send_length:
            headers["Content-Length"] = str(len(route.body))
        headers["Connection"] = "close"
        response = f"HTTP/1.1 {route.status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        with contextlib.suppress(ConnectionError):
            writer.write(response.encode("latin-1") + b"\r\n" + route.body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


def make_certificate(directory: Path, hostname: str) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for `hostname`, written to `directory`; returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{hostname}.pem"
    key_path = directory / f"{hostname}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def start_tls_server(directory: Path, hostname: str) -> tuple[TinyServer, Path]:
    """A started HTTPS `TinyServer` presenting a fresh certificate for `hostname`; returns it and the certificate
    path (to trust with `ssl.create_default_context(cafile=...)`). The caller stops the server."""
    cert, key = make_certificate(directory, hostname)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    instance = TinyServer()
    await instance.start(context)
    return instance, cert
