"""Where audit events go: a syslog server (CEF in RFC 5424 messages), a webhook, or a file of OCSF JSON lines.

A sink's `send` returns only once the destination took the whole batch, and raises `SinkError` otherwise; the
shipper then keeps its cursor where it was and sends the batch again later (at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import certifi
import httpx

from chamberlain.audit.export.cef import to_cef
from chamberlain.audit.export.ocsf import severity_id, to_json_lines
from chamberlain.audit.export.settings import (
    OcsfFileSinkSettings,
    SinkSettings,
    SyslogSinkSettings,
    WebhookSinkSettings,
)
from chamberlain.audit.records import StoredEvent

SIGNATURE_HEADER = "X-Chamberlain-Signature"
_MIN_SECRET_BYTES = 32  # RFC 2104 §3: a key shorter than the hash output (32 bytes for SHA-256) is discouraged
# OCSF severity_id to RFC 5424 §6.2.1 severity: Informational, Notice, Warning, Error, Critical, Alert.
_SYSLOG_SEVERITY = {0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1}


class SinkError(Exception):
    """The destination did not take the batch. The message is safe to log: it names no secret."""


class SinkConfigurationError(Exception):
    """A sink cannot be built from its settings (a missing secret, say): Chamberlain refuses to start."""


class Sink(Protocol):
    async def send(self, events: Sequence[StoredEvent]) -> None:
        """Delivers the whole batch, or raises SinkError."""
        ...

    async def aclose(self) -> None: ...


def build_sink(settings: SinkSettings, environ: Mapping[str, str] | None = None) -> Sink:
    if isinstance(settings, SyslogSinkSettings):
        return SyslogSink(settings)
    if isinstance(settings, WebhookSinkSettings):
        environ = os.environ if environ is None else environ
        secret = environ.get(settings.secret_env, "").encode()
        if len(secret) < _MIN_SECRET_BYTES:
            raise SinkConfigurationError(
                f"webhook sink {settings.cursor_name!r}: set {settings.secret_env} to a secret of at least "
                f"{_MIN_SECRET_BYTES} bytes"
            )
        return WebhookSink(settings, secret)
    return OcsfFileSink(settings)


# -- syslog ------------------------------------------------------------------------------------------------------


def syslog_message(event: StoredEvent, *, facility: int, hostname: str) -> bytes:
    """An RFC 5424 message whose MSG is the event in CEF."""
    priority = facility * 8 + _SYSLOG_SEVERITY[severity_id(event)]  # §6.2.1
    timestamp = datetime.fromtimestamp(event.time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # HEADER: PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, then STRUCTURED-DATA "-" (none). The MSG has
    # no BOM (MSG-ANY, §6.4): a BOM would hide the "CEF:" prefix from CEF parsers.
    header = f"<{priority}>1 {timestamp} {hostname} chamberlain - {_printable(event.action, 32)} - "
    return header.encode("ascii") + to_cef(event).encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 (and RFC 5425 §4.3 over TLS): MSG-LEN SP SYSLOG-MSG."""
    return f"{len(message)} ".encode() + message


def _printable(value: str, limit: int) -> str:
    """A header field of RFC 5424 §6: 1 to `limit` characters of PRINTUSASCII (33-126), else NILVALUE."""
    cleaned = "".join(character if 33 <= ord(character) <= 126 else "_" for character in value)[:limit]
    return cleaned or "-"


class SyslogSink:
    """Keeps one connection open and writes each batch in one go; reconnects after any failure.

    Syslog has no acknowledgement (RFC 6587 §3.4, RFC 5425): a batch counts as accepted once the kernel took it.
    The destination being down, refusing TLS or closing the connection is seen and the batch is sent again; a
    receiver that dies with a batch unread in its socket buffer loses that batch.
    """

    def __init__(self, settings: SyslogSinkSettings) -> None:
        self._settings = settings
        self._hostname = _printable(settings.hostname or socket.gethostname(), 255)
        self._tls = _tls_context(settings.ca_file) if settings.tls else None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, events: Sequence[StoredEvent]) -> None:
        frames = b"".join(
            octet_counted(syslog_message(event, facility=self._settings.facility, hostname=self._hostname))
            for event in events
        )
        try:
            writer = await self._connection()
            writer.write(frames)
            await asyncio.wait_for(writer.drain(), self._settings.timeout)
        except (OSError, TimeoutError) as problem:  # ssl.SSLError is an OSError
            await self.aclose()
            raise SinkError(f"syslog {self._address}: {type(problem).__name__}") from None

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self._settings.timeout)

    @property
    def _address(self) -> str:
        return f"{self._settings.host}:{self._settings.effective_port}"

    async def _connection(self) -> asyncio.StreamWriter:
        # A receiver never writes to us: end-of-file on the read side means it closed the connection.
        if self._writer is not None and self._reader is not None:
            if not self._writer.is_closing() and not self._reader.at_eof():
                return self._writer
            await self.aclose()
        settings = self._settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                settings.host,
                settings.effective_port,
                ssl=self._tls,
                server_hostname=(settings.server_name or settings.host) if self._tls else None,
            ),
            settings.timeout,
        )
        self._reader, self._writer = reader, writer
        return writer


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name verified (RFC 5425 §5.2) against `ca_file`, else the trust store httpx uses
    (certifi); TLS 1.2 at least (RFC 9325 §3.1.1)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# -- webhook -----------------------------------------------------------------------------------------------------


def signature(secret: bytes, body: bytes) -> str:
    """The signature header's value: "sha256=" and the hex HMAC-SHA256 (RFC 2104) of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    """POSTs each batch as OCSF JSON lines; any 2xx answer accepts it.

    The signature covers the body only. A replayed body repeats events a SIEM already has, which it drops by
    their ids (metadata.uid), as it drops the duplicates of at-least-once delivery.
    """

    def __init__(self, settings: WebhookSinkSettings, secret: bytes) -> None:
        self._settings = settings
        self._secret = secret
        self._client = httpx.AsyncClient(
            verify=_tls_context(settings.ca_file), timeout=settings.timeout, follow_redirects=False
        )

    async def send(self, events: Sequence[StoredEvent]) -> None:
        body = to_json_lines(events)
        headers = {"Content-Type": "application/x-ndjson", SIGNATURE_HEADER: signature(self._secret, body)}
        try:
            response = await self._client.post(self._settings.url, content=body, headers=headers)
        except httpx.HTTPError as problem:
            raise SinkError(f"webhook: {type(problem).__name__}") from None
        if not response.is_success:
            raise SinkError(f"webhook answered {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


# -- file --------------------------------------------------------------------------------------------------------


class OcsfFileSink:
    """Appends OCSF JSON lines to a file, synced to disk before the batch counts as delivered."""

    def __init__(self, settings: OcsfFileSinkSettings) -> None:
        self._path = settings.path

    async def send(self, events: Sequence[StoredEvent]) -> None:
        try:
            await asyncio.to_thread(self._append, to_json_lines(events))
        except OSError as problem:
            raise SinkError(f"{self._path}: {problem.strerror or type(problem).__name__}") from None

    def _append(self, data: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only: the file may hold personal fields.
        with open(self._path, "ab", opener=lambda path, flags: os.open(path, flags, 0o600)) as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

    async def aclose(self) -> None:
        return None
