"""DLP alerts over real HTTP: a loopback receiver, Standard Webhooks signatures checked independently, a retry after
a 500, a stop at 410, the signing secret read from a real vault under the "dlp-alerts" binding only, and nothing of
what was detected in the body. (The sender's other rules, SSRF guard and plain http refusal included, are shared with
budget alerts and tested in test_budgets_alerts.py.)"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator

import pytest

from chamberlain.audit.events import Action
from chamberlain.audit.log import AuditLog
from chamberlain.audit.reader import read_events
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.dlp.alerts import DlpAlert, vault_secrets
from chamberlain.dlp.detection import Detection
from chamberlain.dlp.levels import Level
from chamberlain.net.ssrf import SystemResolver
from chamberlain.net.webhooks import AlertSender
from chamberlain.store.database import Database
from chamberlain.store.servers import BUDGET_ALERTS_BINDING, DLP_ALERTS_BINDING
from chamberlain.store.tenants import ensure_tenant
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, LocalKek
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import CredentialKind
from tests.integration.test_budgets_alerts import LOOPBACK, receiving, verify
from tests.support.canary import watch
from tests.support.databases import migrated_database_url, opened_database

KEY = os.urandom(32)
SECRET = "whsec_" + base64.b64encode(KEY).decode()

# What a user sent to an external tool; the detections point into it. None of these values may reach the receiver.
CARD, EMAIL, AWS_KEY = "4111 1111 1111 1111", "jane.roe@corp.example", "AKIAQ3EGRK7ZL2XYWN4M"
TEXT = f"pay with {CARD}, receipt to {EMAIL}; deploy with {AWS_KEY}"
VALUES = (CARD, CARD.replace(" ", ""), EMAIL, AWS_KEY, TEXT)


def detections() -> list[Detection]:
    def at(value: str, type_: str, level: Level) -> Detection:
        start = TEXT.index(value)
        return Detection(type_, start, start + len(value), 1.0, level, "alert")

    return [
        at(CARD, "credit_card", Level.CONFIDENTIAL),
        at(EMAIL, "email_address", Level.INTERNAL),
        at(AWS_KEY, "aws_access_key", Level.RESTRICTED),
    ]


def dlp_alert(tenant: str, url: str) -> DlpAlert:
    """The alert for the detections in TEXT, as the gateway builds it: entity types and counts, no offsets."""
    return DlpAlert(
        tenant=tenant,
        counts=Counter(detection.type for detection in detections()),
        classification=max(detection.classification for detection in detections()),
        action="alert",
        direction="request",
        server="web-search",
        method="tools/call",
        tool="search",
        user_id="alice",
        request_id="req-42",
        compliance_contact="dpo@acme.example",
        webhook=url,
        webhook_secret="hooks/dlp",
    )


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url("sqlite", tmp_path_factory, "dlp-alerts")


async def vault_with_secret(database: Database, audit: AuditLog, tenant: str, binding: str) -> Vault:
    vault = Vault(database, EnvelopeBackend(database, KekRing(LocalKek.generate())), audit)
    ref = SecretRef(tenant, "hooks", "dlp")
    await vault.store(ref, SECRET.encode(), kind=CredentialKind.API_KEY, bindings=[binding])
    return vault


async def test_a_dlp_alert_is_signed_with_the_vaults_dlp_secret_retried_after_a_500_and_says_nothing_found(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    watch(SECRET.encode())  # the canary plugin fails the run if it shows up in logs, audit or answers
    caplog.set_level(logging.DEBUG)
    async with opened_database(database_url) as database:
        tenant = f"acme-{os.urandom(3).hex()}"
        await ensure_tenant(database, tenant)
        audit = AuditLog(database, MasterKey(os.urandom(32)), AuditSettings(commit_delay=0))
        await audit.start()
        vault = await vault_with_secret(database, audit, tenant, DLP_ALERTS_BINDING)
        alerts = AlertSender(
            vault_secrets(vault),
            resolver=SystemResolver(),
            policy=LOOPBACK,
            audit=audit,
            allow_http_loopback=True,
            first_delay=0.05,
        )
        try:
            async with receiving((500, {})) as receiver:
                sent = dlp_alert(tenant, receiver.url)
                alerts.submit(sent)
                await alerts.drained()
            assert (alerts.delivered, alerts.failed) == (1, 0)
            assert len(receiver.deliveries) == 2  # the 500, then the retry
            assert {delivery.headers["webhook-id"] for delivery in receiver.deliveries} == {sent.id}
            for delivery in receiver.deliveries:
                verify(delivery, KEY)
                assert delivery.body == receiver.deliveries[0].body
            body = receiver.deliveries[0].body
            document = json.loads(body)
            assert document["type"] == "dlp.detection"
            assert document["data"] == {
                "tenant": tenant,
                "types": ["aws_access_key", "credit_card", "email_address"],
                "counts": {"aws_access_key": 1, "credit_card": 1, "email_address": 1},
                "detections": 3,
                "classification": "restricted",
                "action": "alert",
                "direction": "request",
                "server": "web-search",
                "method": "tools/call",
                "tool": "search",
                "user_id": "alice",
                "request_id": "req-42",
                "compliance_contact": "dpo@acme.example",
            }
            for value in VALUES:
                assert value.encode() not in body
            assert "receiver-own-token" not in caplog.text  # the receiver's URL query stays out of the logs
            await audit.flush()
            events = await read_events(database, tenant)
            (read,) = events  # a DLP alert has no audit event of its own: its detection is audited where made
            assert (read.action, read.outcome) == (str(Action.CREDENTIAL_READ), "success")
            assert read.public["details"]["upstream"] == DLP_ALERTS_BINDING
        finally:
            await alerts.aclose()
            await audit.aclose()


async def test_a_secret_bound_only_to_budget_alerts_does_not_sign_dlp_alerts(database_url: str) -> None:
    watch(SECRET.encode())
    async with opened_database(database_url) as database:
        tenant = f"acme-{os.urandom(3).hex()}"
        await ensure_tenant(database, tenant)
        audit = AuditLog(database, MasterKey(os.urandom(32)), AuditSettings(commit_delay=0))
        await audit.start()
        vault = await vault_with_secret(database, audit, tenant, BUDGET_ALERTS_BINDING)
        alerts = AlertSender(vault_secrets(vault), resolver=SystemResolver(), policy=LOOPBACK, allow_http_loopback=True)
        try:
            async with receiving() as receiver:
                alerts.submit(dlp_alert(tenant, receiver.url))
                await alerts.drained()
            assert receiver.deliveries == []
            assert (alerts.delivered, alerts.failed) == (0, 1)
            await audit.flush()
            actions = [event.action for event in await read_events(database, tenant)]
            assert actions == [str(Action.CREDENTIAL_REFUSED)]
        finally:
            await alerts.aclose()
            await audit.aclose()


async def test_gone_stops_a_dlp_alert_after_one_attempt() -> None:
    async def secrets(tenant: str, reference: str) -> bytes:
        assert (tenant, reference) == ("acme", "hooks/dlp")
        return SECRET.encode()

    alerts = AlertSender(
        secrets, resolver=SystemResolver(), policy=LOOPBACK, allow_http_loopback=True, first_delay=0.05
    )
    try:
        async with receiving((410, {}), (200, {})) as receiver:
            alerts.submit(dlp_alert("acme", receiver.url))
            await alerts.drained()
        assert len(receiver.deliveries) == 1
        verify(receiver.deliveries[0], KEY)
        assert (alerts.delivered, alerts.failed) == (0, 1)
    finally:
        await alerts.aclose()
