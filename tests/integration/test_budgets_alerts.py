"""Budget alerts over real HTTP: a loopback receiver that fails, then succeeds; Standard Webhooks signatures checked
independently; SSRF refusals; the signing secret read from a real vault and never seen in logs or the audit log."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chamberlain.audit.events import Action, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.audit.reader import read_events
from chamberlain.audit.settings import AuditSettings
from chamberlain.cost.alerts import WEBHOOK_UPSTREAM, BudgetAlert, vault_secrets
from chamberlain.cost.budgets import BudgetGuard, BudgetRule, Reservation
from chamberlain.cost.spend import Scope
from chamberlain.crypto.master_key import MasterKey
from chamberlain.net.ssrf import AddressPolicy, SystemResolver
from chamberlain.net.webhooks import AlertSender
from chamberlain.store.tenants import ensure_tenant
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, LocalKek
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import CredentialKind
from tests.support.canary import watch
from tests.support.databases import migrated_database_url, opened_database
from tests.support.server import free_port

KEY = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(KEY).decode()
LOOPBACK = AddressPolicy(allow_loopback=True)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    received: float


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 answering each POST with the next planned status (then 200)."""

    plan: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""

    async def endpoint(self, request: Request) -> Response:
        self.deliveries.append(Delivery(dict(request.headers), await request.body(), time.time()))
        status, headers = self.plan.pop(0) if self.plan else (200, {})
        return Response(status_code=status, headers=headers)


@contextlib.asynccontextmanager
async def receiving(*plan: tuple[int, dict[str, str]]) -> AsyncIterator[Receiver]:
    receiver = Receiver(list(plan))
    port = free_port()
    app = Starlette(routes=[Route("/hooks/budget", receiver.endpoint, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{port}/hooks/budget?token=receiver-own-token"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


def verify(delivery: Delivery, key: bytes) -> None:
    """Standard Webhooks verification, as a receiver does it: HMAC-SHA256 over "id.timestamp.body"."""
    message_id, timestamp = delivery.headers["webhook-id"], delivery.headers["webhook-timestamp"]
    assert timestamp.isdigit()
    assert abs(int(timestamp) - time.time()) < 60
    signed = f"{message_id}.{timestamp}.".encode() + delivery.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = [part.split(",", 1) for part in delivery.headers["webhook-signature"].split(" ")]
    assert any(version == "v1" and hmac.compare_digest(value, expected) for version, value in versions)


@dataclass
class Audit:
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def alert(url: str | None, secret: str | None = "hooks/budget", **values: object) -> BudgetAlert:
    fields: dict[str, object] = {
        "tenant": "acme",
        "scope": "team",
        "subject": "platform",
        "period": "month",
        "period_start": 1_785_542_400.0,
        "period_end": 1_788_220_800.0,
        "limit_usd": Decimal("100"),
        "threshold": 0.8,
        "spent_usd": Decimal("80.5"),
        "webhook": url,
        "webhook_secret": secret,
    }
    fields.update(values)
    return BudgetAlert(**fields)  # type: ignore[arg-type]


def sender(audit: Audit | None = None, *, policy: AddressPolicy = LOOPBACK, secret: str = SECRET) -> AlertSender:
    async def secrets(tenant: str, reference: str) -> bytes:
        assert (tenant, reference) == ("acme", "hooks/budget")
        return secret.encode()

    return AlertSender(
        secrets,
        resolver=SystemResolver(),
        policy=policy,
        audit=audit,
        allow_http_loopback=True,
        first_delay=0.05,
        attempts=4,
    )


@pytest.fixture(autouse=True)
def _secret_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    # Read in teardown: `caplog.text` would hold only teardown's records, so the call phase's are read explicitly.
    logged = "\n".join(record.getMessage() for record in caplog.get_records("call"))
    for text in (SECRET, base64.b64encode(KEY).decode(), "receiver-own-token"):
        assert text not in logged


async def test_a_failed_delivery_is_retried_with_the_same_id_and_a_valid_signature() -> None:
    audit = Audit()
    alerts = sender(audit)
    try:
        async with receiving((500, {}), (503, {"Retry-After": "0"})) as receiver:
            sent = alert(receiver.url)
            alerts.submit(sent)
            assert len(audit.events) == 1  # recorded at once, whatever becomes of the webhook
            await alerts.drained()
        assert (alerts.delivered, alerts.failed) == (1, 0)
        assert len(receiver.deliveries) == 3
        assert {delivery.headers["webhook-id"] for delivery in receiver.deliveries} == {sent.id}
        for delivery in receiver.deliveries:
            verify(delivery, KEY)
            assert delivery.headers["content-type"] == "application/json"
            assert delivery.body == receiver.deliveries[0].body
        document = json.loads(receiver.deliveries[0].body)
        assert document["type"] == "budget.threshold_crossed"
        assert document["data"] == {
            "tenant": "acme",
            "scope": "team",
            "subject": "platform",
            "period": "month",
            "period_start": "2026-08-01T00:00:00Z",
            "period_end": "2026-09-01T00:00:00Z",
            "limit_usd": "100",
            "threshold": 0.8,
            "spent_usd": "80.5",
        }
        (event,) = audit.events
        assert (event.action, event.outcome, event.target) == (Action.BUDGET_ALERT, "success", "budget:team:platform")
        assert event.details["alert_id"] == sent.id
    finally:
        await alerts.aclose()


async def test_a_tampered_body_fails_verification() -> None:
    alerts = sender()
    try:
        async with receiving() as receiver:
            alerts.submit(alert(receiver.url))
            await alerts.drained()
        delivery = receiver.deliveries[0]
        delivery.body = delivery.body.replace(b"80.5", b"8.05")
        with pytest.raises(AssertionError):
            verify(delivery, KEY)
        with pytest.raises(AssertionError):
            verify(receiver.deliveries[0], os.urandom(32))
    finally:
        await alerts.aclose()


async def test_gone_stops_and_persistent_failure_gives_up_after_the_attempts() -> None:
    alerts = sender()
    try:
        async with receiving((410, {})) as receiver:
            alerts.submit(alert(receiver.url))
            await alerts.drained()
        assert (len(receiver.deliveries), alerts.failed) == (1, 1)
        async with receiving(*[(500, {})] * 10) as receiver:
            alerts.submit(alert(receiver.url))
            await alerts.drained()
        assert (len(receiver.deliveries), alerts.failed, alerts.delivered) == (4, 2, 0)
    finally:
        await alerts.aclose()


async def test_the_ssrf_guard_keeps_alerts_off_loopback_unless_allowed() -> None:
    alerts = sender(policy=AddressPolicy())  # the production default: public addresses only
    try:
        async with receiving() as receiver:
            alerts.submit(alert(receiver.url))
            alerts.submit(alert(receiver.url.replace("127.0.0.1", "[::ffff:127.0.0.1]")))
            await alerts.drained()
        assert receiver.deliveries == []  # no connection was made
        assert (alerts.delivered, alerts.failed) == (0, 2)
    finally:
        await alerts.aclose()


async def test_no_plain_http_off_loopback_and_no_alert_without_a_usable_secret() -> None:
    alerts = sender(secret="whsec_" + base64.b64encode(b"short").decode())
    try:
        async with receiving() as receiver:
            alerts.submit(alert("http://192.0.2.1/hooks"))  # plain http to a non-loopback host
            alerts.submit(alert(receiver.url))  # a secret too short to sign with
            alerts.submit(alert(receiver.url, secret=None))
            await alerts.drained()
        assert receiver.deliveries == []
        assert alerts.failed == 3
    finally:
        await alerts.aclose()


async def test_an_alert_without_a_webhook_is_only_audited() -> None:
    audit = Audit()
    alerts = sender(audit)
    try:
        alerts.submit(alert(None, secret=None))
        await alerts.drained()
        assert len(audit.events) == 1
        assert (alerts.delivered, alerts.failed) == (0, 0)
    finally:
        await alerts.aclose()


# -- end to end: spend crosses a threshold, the secret comes from the vault ---------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "budget-alerts")


class NoSpend:
    async def spend(self, tenant: str, scope: Scope, subject: str | None, start: datetime, end: datetime) -> Decimal:
        return Decimal(0)


async def test_spend_crossing_a_threshold_posts_one_alert_signed_with_the_vaults_secret(database_url: str) -> None:
    watch(SECRET.encode())  # the canary plugin fails the run if it shows up in logs, audit or answers
    master_key = MasterKey(os.urandom(32))
    async with opened_database(database_url) as database:
        tenant = f"acme-{os.urandom(3).hex()}"
        await ensure_tenant(database, tenant)
        audit = AuditLog(database, master_key, AuditSettings(commit_delay=0))
        await audit.start()
        vault = Vault(database, EnvelopeBackend(database, KekRing(LocalKek.generate())), audit)
        await vault.store(
            SecretRef(tenant, "hooks", "budget"),
            SECRET.encode(),
            kind=CredentialKind.API_KEY,
            bindings=[WEBHOOK_UPSTREAM],
        )
        alerts = AlertSender(
            vault_secrets(vault),
            resolver=SystemResolver(),
            policy=LOOPBACK,
            audit=audit,
            allow_http_loopback=True,
            first_delay=0.05,
        )
        guard = BudgetGuard(NoSpend(), alerts=alerts, audit=audit)
        try:
            async with receiving((502, {})) as receiver:
                rules = [
                    BudgetRule(
                        scope="tenant",
                        limit_usd=Decimal(10),
                        alert_at=(0.5,),
                        webhook=receiver.url,
                        webhook_secret="hooks/budget",
                    )
                ]
                for _ in range(3):  # 4, 8 (crosses 0.5), 12 is refused
                    held = await guard.reserve(tenant, rules, user="alice", team=None, estimate_usd=Decimal(4))
                    if isinstance(held, Reservation):
                        await guard.settle(held, Decimal(4))
                await alerts.drained()
            assert len(receiver.deliveries) == 2  # one alert, its first attempt answered 502
            for delivery in receiver.deliveries:
                verify(delivery, KEY)
            await audit.flush()
            events = await read_events(database, tenant)
            actions = [event.action for event in events]
            assert actions.count(str(Action.BUDGET_ALERT)) == 1
            assert actions.count(str(Action.CREDENTIAL_READ)) == 1  # the vault read, audited
            assert actions.count(str(Action.BUDGET_REFUSED)) == 1
        finally:
            await alerts.aclose()
            await guard.aclose()
            await audit.aclose()
