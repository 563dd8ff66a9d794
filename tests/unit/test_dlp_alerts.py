"""DLP alerts: the Standard Webhooks payload, names refused where a value could hide, and the reserved vault binding
of their signing secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chamberlain.dlp.alerts import DlpAlert
from chamberlain.dlp.levels import Level
from chamberlain.store.servers import DLP_ALERTS_BINDING, RESERVED_BINDINGS, check_binding, check_server_name


def alert(**values: Any) -> DlpAlert:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "counts": {"email_address": 1, "credit_card": 2},
        "classification": Level.CONFIDENTIAL,
        "action": "alert",
        "direction": "request",
        "server": "crm",
        "method": "tools/call",
        "tool": "send_mail",
        "user_id": "alice",
        "request_id": "req-1",
        "compliance_contact": "dpo@acme.example",
        "webhook": "https://hooks.example/dlp",
        "webhook_secret": "hooks/dlp",
    }
    return DlpAlert(**(fields | values))


def test_the_payload_names_kinds_places_and_people_never_what_was_found() -> None:
    sent = alert(at=1_785_600_000.5)
    assert "." not in sent.id  # the signed content's separator
    assert sent.audit_event() is None  # the gateway audits each detection itself
    assert json.loads(sent.body()) == {
        "type": "dlp.detection",
        "timestamp": "2026-08-01T16:00:00.500000Z",
        "data": {
            "tenant": "acme",
            "types": ["credit_card", "email_address"],
            "counts": {"credit_card": 2, "email_address": 1},
            "detections": 3,
            "classification": "confidential",
            "action": "alert",
            "direction": "request",
            "server": "crm",
            "method": "tools/call",
            "tool": "send_mail",
            "user_id": "alice",
            "request_id": "req-1",
            "compliance_contact": "dpo@acme.example",
        },
    }


def test_an_llm_proxy_alert_has_no_server_or_tool() -> None:
    data = json.loads(alert(server=None, method=None, tool=None, direction="response", action="block").body())["data"]
    shown = {key: data[key] for key in ("server", "method", "tool", "direction", "action")}
    assert shown == {"server": None, "method": None, "tool": None, "direction": "response", "action": "block"}


@pytest.mark.parametrize(
    "counts",
    [
        {},  # an alert is about something
        {"4111111111111111": 1},  # a value where a type name goes
        {"alice@example.com": 1},
        {"AKIAIOSFODNN7EXAMPLE": 1},
        {"credit card": 1},
        {"credit_card": 0},
    ],
)
def test_anything_but_entity_type_names_with_counts_is_refused_without_being_quoted(counts: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="DLP alert") as refused:
        alert(counts=counts)
    assert all(name not in str(refused.value) for name in counts)


def test_dlp_alert_secrets_have_a_binding_no_server_can_take() -> None:
    assert DLP_ALERTS_BINDING == "dlp-alerts"
    assert DLP_ALERTS_BINDING in RESERVED_BINDINGS
    assert check_binding(DLP_ALERTS_BINDING) == DLP_ALERTS_BINDING  # a vault credential may be bound to it
    with pytest.raises(ValueError, match="reserved for the gateway's own credentials"):
        check_server_name(DLP_ALERTS_BINDING)
