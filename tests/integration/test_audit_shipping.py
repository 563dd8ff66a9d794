"""Shipping the audit log to real receivers on loopback: a syslog server that is down at first gets every event
once it is up, over TCP and over TLS; a webhook gets signed OCSF JSON lines and a refusal moves no cursor; a file
sink carries personal fields only where configured and never a shredded subject's. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.export.settings import (
    OcsfFileSinkSettings,
    SinkSettings,
    SyslogSinkSettings,
    WebhookSinkSettings,
)
from chamberlain.audit.export.shipper import Shipper, load_cursor
from chamberlain.audit.export.sinks import SIGNATURE_HEADER, build_sink
from chamberlain.audit.log import AuditLog
from chamberlain.audit.privacy import SubjectKeys
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import Database
from tests.support.databases import migrated_database_url, opened_database
from tests.support.network import make_certificate
from tests.support.server import free_port, random_name

MASTER_KEY = MasterKey(secrets.token_bytes(32))
SOURCE_IPS = {"user-a": "198.51.100.10", "user-b": "198.51.100.11"}
EVENT_ID = re.compile(rb"externalId=([0-9a-f]{32})")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "audit-shipping")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async with opened_database(database_url) as database:
        yield database


async def write_events(database: Database, count: int) -> tuple[str, list[str]]:
    """`count` events of a new tenant through the real AuditLog, alternately by user-a and user-b."""
    tenant = random_name("tenant")
    log = AuditLog(database, MASTER_KEY, AuditSettings())
    await log.start()
    events = []
    for number in range(count):
        user = "user-a" if number % 2 == 0 else "user-b"
        events.append(
            AuditEvent(
                action=Action.MCP_REQUEST if number % 3 else Action.SIGN_IN,
                outcome="success",
                tenant=tenant,
                actor=Actor("user", user),
                target="mcp:github/create_issue",
                details={"method": "tools/call", "server": "github"},
                personal={"source_ip": SOURCE_IPS[user]},
            )
        )
        log.record(events[-1])
    await log.flush()
    await log.aclose()
    return tenant, [event.id for event in events]


def shipper(
    database: Database,
    settings: SinkSettings,
    *,
    environ: Mapping[str, str] | None = None,
    subject_keys: SubjectKeys | None = None,
) -> Shipper:
    """A shipper that retries and polls quickly, so an outage in a test lasts milliseconds."""
    return Shipper(
        database,
        settings,
        build_sink(settings, environ),
        subject_keys=subject_keys,
        poll_interval=0.02,
        initial_backoff=0.01,
        max_backoff=0.05,
    )


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if await result if isinstance(result, Awaitable) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true")
        await asyncio.sleep(0.01)


def first_occurrences(received: list[str], expected: list[str]) -> list[str]:
    """The expected ids in the order they first arrived (at-least-once delivery may repeat one)."""
    wanted = set(expected)
    return list(dict.fromkeys(event_id for event_id in received if event_id in wanted))


# -- syslog ------------------------------------------------------------------------------------------------------


class SyslogReceiver:
    """A syslog server on 127.0.0.1 reading RFC 6587 octet-counted frames."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def start(self, port: int, context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._read, "127.0.0.1", port, ssl=context, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def event_ids(self) -> list[str]:
        return [match.group(1).decode() for message in self.messages if (match := EVENT_ID.search(message))]

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            while True:
                length = int((await reader.readuntil(b" "))[:-1])
                self.messages.append(await reader.readexactly(length))
        writer.close()


def syslog_settings(port: int, **fields: object) -> SyslogSinkSettings:
    return SyslogSinkSettings.model_validate(
        {"type": "syslog", "name": random_name("syslog"), "host": "127.0.0.1", "port": port, "batch_size": 4} | fields
    )


async def test_a_syslog_sink_that_was_down_receives_everything_once_it_is_back(database: Database) -> None:
    tenant, ids = await write_events(database, 11)
    port = free_port()  # nothing listens there yet
    settings = syslog_settings(port, tls=False)
    receiver = SyslogReceiver()
    running = shipper(database, settings)
    await running.start()
    try:
        await eventually(lambda: running.status.failures >= 3)
        assert running.status.last_error is not None
        assert "ConnectionRefusedError" in running.status.last_error
        assert await load_cursor(database, settings.cursor_name, tenant) == 0

        await receiver.start(port)
        await eventually(lambda: set(ids) <= set(receiver.event_ids()))
        await eventually(lambda: _cursor_is(database, settings.cursor_name, tenant, len(ids)))
        assert running.status.failures == 0
    finally:
        await running.aclose()
        await receiver.stop()

    assert first_occurrences(receiver.event_ids(), ids) == ids
    ours = [message for message in receiver.messages if f"cs1={tenant}".encode() in message]
    assert all(re.match(rb"<\d+>1 \S+ \S+ chamberlain - \S+ - CEF:0\|Chamberlain\|", message) for message in ours)
    # The sink was not configured with include_personal: no address left the log.
    assert not any(ip.encode() in message for message in ours for ip in SOURCE_IPS.values())


async def _cursor_is(database: Database, sink: str, tenant: str, expected: int) -> bool:
    return await load_cursor(database, sink, tenant) == expected


async def test_syslog_over_tls_verifies_the_receivers_certificate(database: Database, tmp_path: Path) -> None:
    tenant, ids = await write_events(database, 5)
    certificate, key = make_certificate(tmp_path, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    port = free_port()
    receiver = SyslogReceiver()
    await receiver.start(port, context)
    untrusting = shipper(database, syslog_settings(port, server_name="localhost"))  # system CAs only
    trusting_settings = syslog_settings(port, server_name="localhost", ca_file=str(certificate))
    trusting = shipper(database, trusting_settings)
    try:
        await untrusting.start()
        await eventually(lambda: untrusting.status.failures >= 2)
        assert "SSLCertVerificationError" in str(untrusting.status.last_error)
        assert receiver.event_ids() == []

        await trusting.start()
        await eventually(lambda: set(ids) <= set(receiver.event_ids()))
        await eventually(lambda: _cursor_is(database, trusting_settings.cursor_name, tenant, len(ids)))
    finally:
        await untrusting.aclose()
        await trusting.aclose()
        await receiver.stop()
    assert first_occurrences(receiver.event_ids(), ids) == ids


# -- webhook -----------------------------------------------------------------------------------------------------


class WebhookReceiver:
    """A Starlette app that checks the HMAC-SHA256 signature, refuses its first `unavailable` deliveries with
    503, and keeps the OCSF events of the others."""

    def __init__(self, secret: bytes, unavailable: int) -> None:
        self.secret = secret
        self.unavailable = unavailable
        self.events: list[dict[str, Any]] = []
        self.refused_signatures = 0
        self.app = Starlette(routes=[Route("/ingest", self.ingest, methods=["POST"])])

    async def ingest(self, request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get(SIGNATURE_HEADER, ""), expected):
            self.refused_signatures += 1
            return Response(status_code=401)
        if self.unavailable:
            self.unavailable -= 1
            return Response(status_code=503)
        assert request.headers["content-type"] == "application/x-ndjson"
        self.events.extend(json.loads(line) for line in body.splitlines())
        return Response(status_code=204)


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started)
        yield port
    finally:
        server.should_exit = True
        await task


async def test_a_webhook_gets_signed_ocsf_lines_and_a_refusal_moves_no_cursor(database: Database) -> None:
    tenant, ids = await write_events(database, 9)
    secret = secrets.token_hex(32)
    receiver = WebhookReceiver(secret.encode(), unavailable=2)
    async with serving(receiver.app) as port:
        url = f"http://127.0.0.1:{port}/ingest"
        wrong = WebhookSinkSettings(type="webhook", name=random_name("hook"), url=url, secret_env="HOOK_SECRET")
        forged = shipper(database, wrong, environ={"HOOK_SECRET": secrets.token_hex(32)})
        await forged.start()
        try:
            await eventually(lambda: receiver.refused_signatures >= 2)
            assert forged.status.last_error == "webhook answered 401"
            assert await load_cursor(database, wrong.cursor_name, tenant) == 0
        finally:
            await forged.aclose()
        assert receiver.events == []

        right = WebhookSinkSettings(
            type="webhook", name=random_name("hook"), url=url, secret_env="HOOK_SECRET", batch_size=4
        )
        signed = shipper(database, right, environ={"HOOK_SECRET": secret})
        await signed.start()
        try:
            await eventually(lambda: _cursor_is(database, right.cursor_name, tenant, len(ids)))
        finally:
            await signed.aclose()
    assert receiver.unavailable == 0  # the 503s were retried
    received = [event["metadata"]["uid"] for event in receiver.events]
    assert first_occurrences(received, ids) == ids


# -- file --------------------------------------------------------------------------------------------------------


async def test_a_file_sink_has_personal_fields_only_where_configured_and_none_of_a_shredded_subject(
    database: Database, tmp_path: Path
) -> None:
    tenant, ids = await write_events(database, 6)
    async with database.begin() as connection:
        await SubjectKeys(MASTER_KEY).shred(connection, tenant, "user-b")
    personal_path, public_path = tmp_path / "personal.jsonl", tmp_path / "public.jsonl"
    with_personal = shipper(
        database,
        OcsfFileSinkSettings(type="ocsf_file", name=random_name("file"), path=personal_path, include_personal=True),
        subject_keys=SubjectKeys(MASTER_KEY),
    )
    without = shipper(
        database,
        OcsfFileSinkSettings(type="ocsf_file", name=random_name("file"), path=public_path),
        subject_keys=SubjectKeys(MASTER_KEY),  # given, yet not used: this sink is not configured for them
    )
    assert await with_personal.ship_pending() >= len(ids)
    assert await without.ship_pending() >= len(ids)
    assert await with_personal.ship_pending() == 0  # the cursor moved: nothing is sent twice

    assert personal_path.stat().st_mode & 0o777 == 0o600
    personal = [event for event in _read_lines(personal_path) if event["metadata"]["tenant_uid"] == tenant]
    assert [event["metadata"]["uid"] for event in personal] == ids
    addresses = {event["actor"]["user"]["uid"]: event.get("src_endpoint", {}).get("ip") for event in personal}
    assert addresses == {"user-a": SOURCE_IPS["user-a"], "user-b": None}  # user-b's key was shredded
    public_text = public_path.read_text()
    assert tenant in public_text
    assert not any(ip in public_text for ip in SOURCE_IPS.values())


def _read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
