"""Budget alerts: a soft threshold crossed becomes an audit event and, when the rule names a webhook, a signed POST.

The POST is a Standard Webhooks 1.0 message sent by net/webhooks.py's `AlertSender` (signing, retries, SSRF guard):
its body is {"type": "budget.threshold_crossed", "timestamp": …, "data": {…}}, and its signing secret is the one the
rule's `webhook_secret` names in the tenant's vault, bound to the reserved binding "budget-alerts".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Literal

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.net.webhooks import (
    SecretReader,
    iso_time,
    new_message_id,
    vault_secret_reader,
    webhook_payload,
)
from chamberlain.store.servers import BUDGET_ALERTS_BINDING

if TYPE_CHECKING:
    from chamberlain.vault.service import Vault

WEBHOOK_UPSTREAM: Final = BUDGET_ALERTS_BINDING  # the vault binding a webhook secret needs
EVENT_TYPE: Final = "budget.threshold_crossed"
SYSTEM: Final = Actor("system", "budgets")


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    tenant: str
    scope: Literal["user", "team", "tenant"]
    subject: str | None  # the user id or team name; None for the tenant
    period: Literal["day", "week", "month"]
    period_start: float  # POSIX seconds
    period_end: float
    limit_usd: Decimal
    threshold: float  # the fraction of the limit crossed
    spent_usd: Decimal
    webhook: str | None
    webhook_secret: str | None  # "SOURCE/NAME" in the tenant's vault
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=new_message_id)

    @property
    def event_type(self) -> str:
        return EVENT_TYPE

    def body(self) -> bytes:
        data = {
            "tenant": self.tenant,
            "scope": self.scope,
            "subject": self.subject,
            "period": self.period,
            "period_start": iso_time(self.period_start),
            "period_end": iso_time(self.period_end),
            "limit_usd": str(self.limit_usd),
            "threshold": self.threshold,
            "spent_usd": str(self.spent_usd),
        }
        return webhook_payload(EVENT_TYPE, self.at, data)

    def audit_event(self) -> AuditEvent:
        return AuditEvent(
            action=Action.BUDGET_ALERT,
            outcome="success",
            tenant=self.tenant,
            actor=SYSTEM,
            target=f"budget:{self.scope}:{self.subject or self.tenant}",
            reason=f"{self.threshold:g} of the {self.period}ly budget of USD {self.limit_usd} reached",
            details={
                "period": self.period,
                "period_start": iso_time(self.period_start),
                "limit_usd": str(self.limit_usd),
                "threshold": self.threshold,
                "spent_usd": str(self.spent_usd),
                "webhook": self.webhook is not None,
                "alert_id": self.id,
            },
            subject=self.subject if self.scope == "user" else None,
        )


def vault_secrets(vault: Vault) -> SecretReader:
    """Reads budget webhook secrets (bound to "budget-alerts") from the tenant's vault, each read audited."""
    return vault_secret_reader(vault, WEBHOOK_UPSTREAM, purpose="budget alert signature")
