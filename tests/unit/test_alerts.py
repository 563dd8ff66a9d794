"""Standard Webhooks signing for budget alerts: the reference test vector, secret formats, nothing shown of a secret."""

from __future__ import annotations

import base64
import json
import os
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.cost.alerts import BudgetAlert
from chamberlain.net.webhooks import WebhookSecret, signed_headers


def test_the_reference_implementations_test_vector() -> None:
    # standard-webhooks/standard-webhooks libraries/python/tests/test_webhooks.py, test_sign_function.
    secret = WebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = secret.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_carry_id_timestamp_and_signature() -> None:
    secret = WebhookSecret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")  # as read from a file or the vault
    headers = signed_headers(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}', 1614265330)
    assert headers == {
        "content-type": "application/json",
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


@pytest.mark.parametrize(
    "value",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix: a raw string is not taken as a key
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(os.urandom(23)).decode(),  # below 24 bytes
        "whsec_" + base64.b64encode(os.urandom(65)).decode(),  # above 64
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ValueError, match="webhook secret") as refused:
        WebhookSecret(value)
    assert value[6:] not in str(refused.value) or not value[6:]


@given(st.binary(min_size=24, max_size=64))
def test_a_secret_never_shows_its_key(key: bytes) -> None:
    text = "whsec_" + base64.b64encode(key).decode()
    secret = WebhookSecret(text)
    for shown in (repr(secret), str(secret), f"{secret!r}"):
        assert text[6:] not in shown
        assert key.hex() not in shown


def test_the_payload_follows_the_recommended_structure() -> None:
    alert = BudgetAlert(
        tenant="acme",
        scope="user",
        subject="alice",
        period="day",
        period_start=1_785_542_400.0,
        period_end=1_785_628_800.0,
        limit_usd=Decimal("20"),
        threshold=1.0,
        spent_usd=Decimal("20.000001"),
        webhook="https://hooks.example/b",
        webhook_secret="hooks/budget",
        at=1_785_600_000.5,
    )
    assert "." not in alert.id  # the signed content's separator
    document = json.loads(alert.body())
    assert document == {
        "type": "budget.threshold_crossed",
        "timestamp": "2026-08-01T16:00:00.500000Z",
        "data": {
            "tenant": "acme",
            "scope": "user",
            "subject": "alice",
            "period": "day",
            "period_start": "2026-08-01T00:00:00Z",
            "period_end": "2026-08-02T00:00:00Z",
            "limit_usd": "20",
            "threshold": 1.0,
            "spent_usd": "20.000001",
        },
    }
    event = alert.audit_event()
    assert event.subject == "alice"  # a user's alert is about that user (erasable with their key)
    assert "hooks/budget" not in json.dumps(event.public_fields())
