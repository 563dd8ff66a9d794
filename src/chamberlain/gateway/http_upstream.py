"""Upstream MCP servers reached over streamable HTTP, through a pool of keep-alive connections.

The proxy's hot path runs through here, so it uses the lean HTTP/1.1 client in net/http1.py (measured: a sixth of
httpx's CPU per request). The client's token never comes here: the upstream gets its own credential.

An https upstream has one SSLContext for its pool (`UpstreamTls`): the public CAs, or only the configured `ca`; a
client certificate from the vault for mutual TLS, read (and audited) before the first request and again every
`CLIENT_CERTIFICATE_REFRESH` seconds into the same context, so that a rotated certificate is used by new connections;
and pins of the upstream's key, checked once the handshake has verified the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import certifi

from chamberlain.gateway.server_config import ServerConfig
from chamberlain.gateway.sse import EventTooLarge, split_events
from chamberlain.gateway.upstream import UpstreamError, UpstreamRequest, UpstreamResponse
from chamberlain.gateway.upstream_credentials import UpstreamCredentials, VaultAccess
from chamberlain.net.http1 import (
    BodyTooLarge,
    ConnectFailed,
    Http1Pool,
    Http1Response,
    ProtocolFailure,
    ResponseTimeout,
)
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.transport.settings import parse_spki_pin
from chamberlain.transport.tls import spki_sha256

logger = logging.getLogger(__name__)

CLIENT_CERTIFICATE_REFRESH = 300.0  # seconds between reads of the client certificate from the vault
NO_CLIENT_CERTIFICATE = "the TLS client certificate for this upstream could not be loaded"

# Response headers worth relaying to the client; hop-by-hop and upstream-identifying headers stay here.
_RELAYED = frozenset({b"content-type", b"mcp-session-id", b"mcp-protocol-version", b"cache-control"})


class HttpUpstream:
    def __init__(
        self, name: str, config: ServerConfig, credentials: UpstreamCredentials, vault: VaultAccess | None = None
    ) -> None:
        """`vault`: how this upstream reads its secrets, needed for a client certificate or a CA in the vault."""
        assert config.url is not None
        parts = urlsplit(config.url)
        self._name = name
        self._config = config
        self._credentials = credentials
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls = UpstreamTls(name, config, vault) if parts.scheme == "https" else None
        tls = self._tls.context if self._tls is not None else None
        # Idle connections are dropped before a typical upstream's keep-alive (uvicorn: 5 s) would drop them, so a
        # POST seldom meets a connection the upstream is closing (POSTs are never retried: a tool may have run).
        self._pool = Http1Pool(f"{parts.scheme}://{parts.netloc}", ssl_context=tls, idle_timeout=4.0)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        config = self._config
        if self._tls is not None:
            await self._tls.prepare(request.principal)
        headers = request.headers + await self._credentials.headers(request.principal)
        if request.session_id is not None:
            headers.append((b"mcp-session-id", request.session_id.encode()))
        with self._failures():
            response = await self._pool.request(
                request.method, self._target, headers, request.body, timeout=config.timeout
            )
        relayed = [(name, value) for name, value in response.headers if name in _RELAYED]
        if _header(response, b"content-type").startswith(b"text/event-stream"):
            # A request's stream must keep moving; a subscription stream may rightly stay quiet for hours.
            idle = None if request.long_lived else config.timeout
            events = self._events(response, idle)
            return UpstreamResponse(response.status, relayed, events=events, release=response.aclose)
        with self._failures():
            body = await response.read(config.max_message_bytes, timeout=config.timeout)
        return UpstreamResponse(response.status, relayed, body=body)

    async def _events(self, response: Http1Response, idle_timeout: float | None) -> AsyncIterator[bytes]:
        try:
            with self._failures():
                chunks = response.chunks(idle_timeout=idle_timeout)
                async for event in split_events(chunks, self._config.max_message_bytes):
                    yield event
        finally:
            await response.aclose()

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """Turns the HTTP client's failures into UpstreamErrors that are safe to show the client."""
        name = self._name
        try:
            yield
        except ConnectFailed:
            raise UpstreamError("unavailable", f"the upstream server '{name}' is not reachable") from None
        except ResponseTimeout:
            raise UpstreamError("timeout", f"the upstream server '{name}' did not answer in time") from None
        except (BodyTooLarge, EventTooLarge):
            raise UpstreamError("too_large", f"the answer of '{name}' exceeds the message size limit") from None
        except ProtocolFailure:
            raise UpstreamError("protocol", f"the upstream server '{name}' sent a broken answer") from None
        except ValueError:  # a header the HTTP client refuses to send (it never names the value)
            raise UpstreamError("protocol", f"a request header could not be sent to '{name}'") from None

    async def aclose(self) -> None:
        await self._pool.aclose()
        await self._credentials.aclose()


def _header(response: Http1Response, name: bytes) -> bytes:
    for key, value in response.headers:
        if key == name:
            return value.lower()
    return b""


class UpstreamTls:
    """The SSLContext of one https upstream's pool; `prepare` loads what comes from the vault before it is used."""

    def __init__(self, name: str, config: ServerConfig, vault: VaultAccess | None) -> None:
        self._name = name
        self._config = config
        self._vault = vault
        if config.ca is None and config.ca_vault is None:
            self.context = ssl.create_default_context(cafile=certifi.where())
        else:
            # Only the configured CAs: an upstream on a private PKI must not be impersonable by any public CA.
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996
        self.context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        pins = frozenset(parse_spki_pin(pin) for pin in config.pinned_spki)
        if pins:
            self.context.sslobject_class = _pinned(pins, name)
        self._ca_loaded = config.ca_vault is None
        self._certificate_due = 0.0 if config.client_certificate is not None else float("inf")
        self._lock = asyncio.Lock()
        if config.ca is not None:
            try:
                self.context.load_verify_locations(cafile=config.ca)
            except (OSError, ssl.SSLError) as problem:
                # The pool then trusts nothing and every connection fails verification: closed, not open.
                logger.warning("upstream %s: ca %s is not a usable PEM file: %s", name, config.ca, problem)

    async def prepare(self, principal: AccessTokenClaims) -> None:
        """Loads the vault's CA once and the client certificate when due; raises UpstreamError when it cannot."""
        if self._ca_loaded and time.monotonic() < self._certificate_due:
            return
        async with self._lock:
            if not self._ca_loaded:
                await self._load_ca(principal)
            if time.monotonic() >= self._certificate_due:
                await self._load_client_certificate(principal)

    async def _load_ca(self, principal: AccessTokenClaims) -> None:
        vault = self._needs_vault()
        assert self._config.ca_vault is not None
        pem = await vault.read(vault.ref(self._config.ca_vault), principal, shared=True, purpose="TLS trust anchors")
        try:
            self.context.load_verify_locations(cadata=pem.decode("ascii"))
        except (UnicodeDecodeError, ssl.SSLError, ValueError):
            logger.warning("upstream %s: the vault secret %s holds no PEM CA", self._name, self._config.ca_vault)
            raise UpstreamError("credential", "the CA for this upstream could not be loaded") from None
        self._ca_loaded = True

    async def _load_client_certificate(self, principal: AccessTokenClaims) -> None:
        vault, names = self._needs_vault(), self._config.client_certificate
        assert names is not None
        purpose = "TLS client certificate (RFC 8446 §4.4.2)"
        try:
            certificate = await vault.read(vault.ref(names.certificate), principal, shared=True, purpose=purpose)
            key = await vault.read(vault.ref(names.private_key), principal, shared=True, purpose=purpose)
            load_client_certificate(self.context, certificate, key)
        except (UpstreamError, ssl.SSLError, OSError) as problem:
            if self._certificate_due > 0:  # loaded before: the current one serves until the vault answers again
                logger.warning("upstream %s: the client certificate was not refreshed: %s", self._name, problem)
                self._certificate_due = time.monotonic() + CLIENT_CERTIFICATE_REFRESH / 10
                return
            if isinstance(problem, UpstreamError):
                raise
            # The message of ssl names OpenSSL's reason (e.g. KEY_VALUES_MISMATCH), never the key.
            logger.warning("upstream %s: the client certificate in the vault does not load: %s", self._name, problem)
            raise UpstreamError("credential", NO_CLIENT_CERTIFICATE) from None
        self._certificate_due = time.monotonic() + CLIENT_CERTIFICATE_REFRESH

    def _needs_vault(self) -> VaultAccess:
        if self._vault is None:
            raise UpstreamError("credential", NO_CLIENT_CERTIFICATE)
        return self._vault


def load_client_certificate(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """ssl loads a certificate and key only from files: these files live in memory (memfd) or, elsewhere, 0600 in a
    0700 directory for the instant of the call."""
    with _secret_file(certificate) as certificate_file, _secret_file(key) as key_file:
        context.load_cert_chain(certificate_file, key_file)


@contextlib.contextmanager
def _secret_file(content: bytes) -> Iterator[str]:
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create("chamberlain-tls", os.MFD_CLOEXEC)
        try:
            _write_all(descriptor, content)
            yield f"/proc/self/fd/{descriptor}"
        finally:
            os.close(descriptor)
    else:
        with tempfile.TemporaryDirectory(prefix="chamberlain-tls-") as directory:  # mkdtemp: mode 0700
            path = os.path.join(directory, "pem")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(descriptor, content)
            finally:
                os.close(descriptor)
            yield path


def _write_all(descriptor: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(descriptor, view) :]


def _pinned(pins: frozenset[bytes], upstream: str) -> type[ssl.SSLObject]:
    """An SSLObject whose handshake also requires the peer's key to be pinned (RFC 7469 §2.4 digests). asyncio and
    uvloop drive the handshake through this method, so a mismatch fails the connection like a bad chain."""

    class PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            der = self.getpeercert(binary_form=True)
            if der is None or spki_sha256(der) not in pins:
                logger.warning("upstream %s: its TLS certificate's key is not pinned; connection refused", upstream)
                raise ssl.SSLCertVerificationError("the upstream's certificate key is not pinned")

    return PinnedSSLObject
