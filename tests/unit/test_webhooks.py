"""The generic Standard Webhooks sender's pieces: Retry-After parsing, backoff, the payload structure, what logs may
show of a URL, the vault read under the caller's binding, and alerts with or without an audit event of their own.
(Signing and secrets: test_alerts.py; delivery over real HTTP: integration/test_budgets_alerts.py and
integration/test_dlp_alerts.py.)"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.net.ssrf import AddressPolicy, SystemResolver
from chamberlain.net.webhooks import (
    AlertSender,
    _loggable,
    _retry_after,
    iso_time,
    new_message_id,
    vault_secret_reader,
    webhook_payload,
)
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.service import Vault


def answer(retry_after: str | None) -> httpx.Response:
    return httpx.Response(503, headers={} if retry_after is None else {"Retry-After": retry_after})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None)],
)
def test_retry_after_takes_delay_seconds_and_nothing_else_that_is_not_a_date(
    value: str | None, expected: float | None
) -> None:
    assert _retry_after(answer(value)) == expected


def test_retry_after_takes_an_http_date_as_the_time_left_and_never_a_negative_one() -> None:
    later = _retry_after(answer(email.utils.formatdate(time.time() + 3600, usegmt=True)))
    assert later is not None
    assert 3000 < later <= 3600
    assert _retry_after(answer("Sun, 06 Nov 1994 08:49:37 GMT")) == 0.0  # RFC 9110's example date, long past


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_retry_after_never_raises_on_what_a_receiver_sends(value: str) -> None:
    result = _retry_after(answer(value))
    assert result is None or result >= 0


async def no_secrets(tenant: str, reference: str) -> bytes:
    raise AssertionError("no secret is read without a webhook")


@pytest.fixture
async def sender() -> AsyncIterator[AlertSender]:
    alerts = AlertSender(no_secrets, resolver=SystemResolver(), policy=AddressPolicy(), first_delay=1.0, max_delay=8.0)
    yield alerts
    await alerts.aclose()


async def test_backoff_doubles_with_jitter_up_to_the_cap(sender: AlertSender) -> None:
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (12, 8.0)]:
        delays = [sender._delay(attempt, None) for _ in range(200)]
        assert all(step / 2 <= delay <= step for delay in delays)
        assert len(set(delays)) > 1  # jittered: receivers coming back are not hit all at once


async def test_a_receivers_retry_after_is_honoured_up_to_the_cap(sender: AlertSender) -> None:
    assert sender._delay(1, 3.0) == 3.0
    assert sender._delay(1, 0.0) == 0.0
    assert sender._delay(1, 86_400.0) == 8.0


@dataclass(frozen=True)
class Ping:
    """The least a `WebhookAlert` needs: a frozen dataclass with the protocol's members."""

    tenant: str
    webhook: str | None
    webhook_secret: str | None
    audited: bool
    id: str = field(default_factory=new_message_id)
    event_type: str = "test.ping"

    def body(self) -> bytes:
        return webhook_payload(self.event_type, 0.0, {"tenant": self.tenant})

    def audit_event(self) -> AuditEvent | None:
        if not self.audited:
            return None
        return AuditEvent(action=Action.BUDGET_ALERT, outcome="success", tenant=self.tenant, actor=Actor("system", "t"))


@dataclass
class Audit:
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


async def test_an_alert_with_an_event_is_audited_and_one_without_is_not() -> None:
    audit = Audit()
    alerts = AlertSender(no_secrets, resolver=SystemResolver(), policy=AddressPolicy(), audit=audit)
    try:
        alerts.submit(Ping("acme", None, None, audited=True))
        alerts.submit(Ping("acme", None, None, audited=False))
        await alerts.drained()
        assert [event.tenant for event in audit.events] == ["acme"]
        assert (alerts.delivered, alerts.failed) == (0, 0)  # no webhook: nothing to deliver
    finally:
        await alerts.aclose()


def test_the_payload_is_type_timestamp_and_data_in_compact_json() -> None:
    body = webhook_payload("dlp.detection", 1_785_600_000.5, {"tenant": "acme", "counts": {"iban": 1}})
    assert b" " not in body
    assert json.loads(body) == {
        "type": "dlp.detection",
        "timestamp": "2026-08-01T16:00:00.500000Z",
        "data": {"tenant": "acme", "counts": {"iban": 1}},
    }
    assert iso_time(0) == "1970-01-01T00:00:00Z"


def test_message_ids_are_unique_and_free_of_the_signed_separator() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(message_id.startswith("msg_") and "." not in message_id for message_id in ids)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example/a/b?token=s3cr3t#frag", "https://hooks.example/a/b"),
        ("http://127.0.0.1:8080/hook?sig=abc&x=1", "http://127.0.0.1:8080/hook"),
        ("https://hooks.example", "https://hooks.example"),
    ],
)
def test_logs_show_a_url_without_its_query_or_fragment(url: str, shown: str) -> None:
    assert _loggable(url).rstrip("/") == shown


async def test_httpx_request_logs_keep_no_query(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204))) as client:
        await client.post("https://hooks.example/in?token=receiver-own-token&x=1")
    (logged,) = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert "https://hooks.example/in" in logged
    assert "receiver-own-token" not in logged


@dataclass
class RecordingVault:
    reads: list[tuple[Any, ...]] = field(default_factory=list)

    async def use(self, *args: Any, **kwargs: Any) -> bytes:
        self.reads.append((*args, kwargs))
        return b"whsec_value"


async def test_secrets_are_read_under_the_callers_binding_by_the_gateway_itself() -> None:
    vault = RecordingVault()
    read = vault_secret_reader(cast(Vault, vault), "dlp-alerts", purpose="DLP alert signature")
    assert await read("acme", "hooks/dlp") == b"whsec_value"
    assert vault.reads == [
        ("acme", "dlp-alerts", None, None, SecretRef("acme", "hooks", "dlp"), {"purpose": "DLP alert signature"})
    ]
