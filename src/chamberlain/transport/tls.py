"""HTTPS and mutual TLS for `chamberlain serve`: the server context, its reload, client certificate pins, and the
client certificate handed to the application as the ASGI TLS extension.

The listening socket keeps one SSLContext for its life, so a reload cannot replace it: instead every handshake's
SNI callback (OpenSSL calls it for every ClientHello, with or without a server name) moves the connection to the
current context, rebuilt from the files when they change. A file that does not load keeps the previous context.

Pins are checked in the connection gate (transport/gate.py) right after the handshake, before any HTTP byte is read.
The client certificate reaches the application in `scope["extensions"]["tls"]` (https://asgi.readthedocs.io/en/
latest/specs/tls.html); read it with `client_certificate(scope)` or `client_certificate_thumbprint(scope)`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.types import ASGIApp, Receive, Scope, Send

from chamberlain.transport.gate import ConnectionGate, GatedConfig
from chamberlain.transport.settings import TlsSettings

logger = logging.getLogger(__name__)

# TLS 1.2 suites: ECDHE only (forward secrecy) and AEAD only (no CBC, no SHA-1 MACs), as in Mozilla's "intermediate"
# profile and RFC 9325 §4.2. TLS 1.3 suites are all AEAD and are not affected by set_ciphers.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_VERSION_NUMBERS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}  # the ASGI TLS extension's tls_version
_VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class TlsConfigurationError(Exception):
    """Why the TLS files cannot be used, in one line naming the setting and the file."""


def harden(context: ssl.SSLContext) -> None:
    """TLS 1.2 minimum (RFC 8996 deprecates 1.0 and 1.1), strong suites, no compression (CRIME), no renegotiation."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE


def build_server_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context from the files `settings` names; raises TlsConfigurationError naming the key and file."""
    if settings.certificate is None or settings.private_key is None:
        raise TlsConfigurationError("tls.certificate and tls.private_key are required for TLS")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    harden(context)
    context.set_alpn_protocols(["http/1.1"])
    _readable("tls.certificate", settings.certificate)
    _readable("tls.private_key", settings.private_key)
    try:
        context.load_cert_chain(settings.certificate, settings.private_key)
    except ssl.SSLError as problem:
        if "KEY_VALUES_MISMATCH" in str(problem):
            raise TlsConfigurationError(
                f"tls.private_key: {settings.private_key} is not the key of the certificate {settings.certificate}"
            ) from None
        raise TlsConfigurationError(
            f"tls.certificate / tls.private_key: {settings.certificate} or {settings.private_key} is not a PEM"
            f" certificate chain and unencrypted private key ({problem.reason or problem})"
        ) from None
    warn_if_expired("tls.certificate", settings.certificate)
    if settings.client_ca is not None:
        _readable("tls.client_ca", settings.client_ca)
        try:
            context.load_verify_locations(cafile=settings.client_ca)
        except ssl.SSLError as problem:
            raise TlsConfigurationError(
                f"tls.client_ca: {settings.client_ca} holds no usable PEM certificate ({problem.reason or problem})"
            ) from None
    context.verify_mode = _VERIFY_MODES[settings.client_certificate_mode]
    # No session tickets: a resumed session skips certificate verification, so a ticket issued before a reload
    # would outlive a CA taken out of tls.client_ca (TLS 1.2 session-id resumption stays, bounded by OpenSSL's cache).
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    return context


def _readable(key: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as problem:
        raise TlsConfigurationError(f"{key}: cannot read {path}: {problem.strerror or problem}") from None


def warn_if_expired(key: str, path: Path) -> None:
    """An expired or not yet valid server certificate still loads (clients will refuse it): say so loudly."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc <= now:
        logger.warning("%s: the certificate in %s expired on %s", key, path, certificate.not_valid_after_utc)
    elif certificate.not_valid_before_utc > now:
        logger.warning("%s: the certificate in %s is valid only from %s", key, path, certificate.not_valid_before_utc)


class ServerTls:
    """The context uvicorn listens with, and the current one each handshake moves to (reloaded on file changes)."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.pins = settings.pins
        self._lock = threading.Lock()
        self._files = [path for path in (settings.certificate, settings.private_key, settings.client_ca) if path]
        self._stamp = self._stamps()
        self._current = build_server_context(settings)
        self._checked_at = time.monotonic()
        self.context = build_server_context(settings)
        self.context.sni_callback = self._select

    @property
    def requires_client_certificates(self) -> bool:
        return self.settings.client_certificate_mode == "required"

    def _select(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        # An exception here would end the handshake with an internal error; reload never raises.
        if self.settings.reload_interval and time.monotonic() - self._checked_at >= self.settings.reload_interval:
            self.reload()
        connection.context = self._current

    def reload(self) -> bool:
        """Rebuilds the context when a file changed; True when a new one is in use. Failures keep the old one."""
        with self._lock:
            self._checked_at = time.monotonic()
            stamp = self._stamps()
            if stamp == self._stamp:
                return False
            try:
                context = build_server_context(self.settings)
            except TlsConfigurationError as problem:
                logger.error("TLS files changed but were not reloaded; the previous ones stay in use: %s", problem)
                return False
            self._current, self._stamp = context, stamp
        logger.info("TLS certificates reloaded from %s", ", ".join(map(str, self._files)))
        return True

    def _stamps(self) -> tuple[tuple[int, int, int, int], ...]:
        stamps = []
        for path in self._files:
            try:
                status = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0, 0))
                continue
            stamps.append((status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns))
        return tuple(stamps)


class TlsConfig(GatedConfig):
    """uvicorn's configuration listening with `tls.context`, behind the gate that checks pins."""

    def __init__(self, app: ASGIApp, *, tls: ServerTls, **options: Any) -> None:
        super().__init__(app, ssl_context_factory=lambda _config, _default: tls.context, **options)
        self.tls = tls
        self.gate = TlsGate


class TlsGate(ConnectionGate):
    """Closes a connection whose client certificate is not pinned; hands the certificate to the application."""

    _config: TlsConfig

    def admits(self, transport: asyncio.BaseTransport) -> bool:
        tls = self._config.tls
        connection = transport.get_extra_info("ssl_object")
        if not isinstance(connection, ssl.SSLObject | ssl.SSLSocket):
            logger.warning("TLS connection refused: no TLS session on the transport")
            return False
        der = connection.getpeercert(binary_form=True)
        if der is None:
            if tls.requires_client_certificates:  # the handshake enforces it; this is the second lock
                logger.warning("TLS connection refused: no client certificate")
                return False
            return True
        if tls.pins:
            spki = spki_sha256(der)
            if spki not in tls.pins:
                logger.warning(
                    "TLS connection refused: client certificate key %s is not pinned",
                    base64.urlsafe_b64encode(spki).rstrip(b"=").decode("ascii"),
                )
                return False
        return True

    def admitted(self, protocol: asyncio.Protocol, transport: asyncio.BaseTransport) -> None:
        # uvicorn's HTTP protocols call `self.app` per request: wrap it for this connection only.
        extension = tls_extension(transport.get_extra_info("ssl_object"))
        protocol.app = WithTlsExtension(protocol.app, extension)  # type: ignore[attr-defined]


class WithTlsExtension:
    """Adds one connection's `tls` extension to each request's scope."""

    def __init__(self, app: ASGIApp, extension: dict[str, Any]) -> None:
        self.app = app
        self.extension = extension

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = scope.get("extensions")
            if extensions is None:
                scope["extensions"] = extensions = {}
            extensions["tls"] = self.extension
        await self.app(scope, receive, send)


def tls_extension(connection: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension for a connection; Python's ssl exposes only the peer's leaf certificate."""
    der = connection.getpeercert(binary_form=True)
    name = None
    if der is not None:
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der is not None else [],
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _VERSION_NUMBERS.get(connection.version() or ""),
        "cipher_suite": None,
    }


def client_certificate_der(scope: Mapping[str, Any]) -> bytes | None:
    """The verified client certificate of the request's connection, DER-encoded; None without one (or TLS)."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, Mapping):
        return None
    chain = tls.get("client_cert_chain")
    if not chain or not isinstance(chain[0], str):
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])


def client_certificate(scope: Mapping[str, Any]) -> x509.Certificate | None:
    der = client_certificate_der(scope)
    return None if der is None else x509.load_der_x509_certificate(der)


def client_certificate_thumbprint(scope: Mapping[str, Any]) -> str | None:
    """RFC 8705 §3.1: base64url(SHA-256(DER certificate)), as `cnf.x5t#S256` carries it."""
    der = client_certificate_der(scope)
    return None if der is None else certificate_thumbprint(der)


def certificate_thumbprint(der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def spki_sha256(der: bytes) -> bytes:
    """SHA-256 of a certificate's SubjectPublicKeyInfo (RFC 7469 §2.4): stable across re-issues with the same key."""
    public_key = x509.load_der_x509_certificate(der).public_key()
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()
