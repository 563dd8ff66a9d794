"""DLP alerts: what a detection with the `alert` action (or any the gateway chooses to report) sends to the tenant's
compliance webhook.

The POST is a Standard Webhooks 1.0 message sent by net/webhooks.py's `AlertSender` (signing, retries, SSRF guard),
signed with the secret the tenant's `dlp.alerts.webhook_secret` names in its vault, bound to the reserved binding
"dlp-alerts". Its body:

    {"type": "dlp.detection", "timestamp": "…Z", "data": {"tenant", "types", "counts", "detections",
     "classification", "action", "direction", "server", "method", "tool", "user_id", "request_id",
     "compliance_contact"}}

It says what kind of data was seen, where and for whom, never what: an alert is built from entity type names and
counts only, so no matched text, offset or other value of the message can reach the receiver. Unlike a budget
alert it has no audit event of its own (`audit_event` is None): the gateway audits every detection where it is
made, alerted or not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from chamberlain.dlp.detection import Action
from chamberlain.dlp.levels import Level
from chamberlain.net.webhooks import SecretReader, new_message_id, vault_secret_reader, webhook_payload
from chamberlain.store.servers import DLP_ALERTS_BINDING

if TYPE_CHECKING:
    from chamberlain.audit.events import AuditEvent
    from chamberlain.vault.service import Vault

EVENT_TYPE: Final = "dlp.detection"
Direction = Literal["request", "response"]  # the client's message on its way upstream, or the upstream's answer
# An entity type as DlpConfig spells it (config.py `EntityType`): a name, never something a message could carry
# such as digits, an address or a key.
_ENTITY_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class DlpAlert:
    tenant: str
    counts: Mapping[str, int]  # detections per entity type, e.g. {"credit_card": 2}
    classification: Level  # the message's level (the highest of what classified it)
    action: Action  # what the gateway did with the message
    direction: Direction
    server: str | None  # the MCP server; None for the LLM proxy
    method: str | None  # the JSON-RPC method ("tools/call") or the LLM proxy's route
    tool: str | None  # the tool called, for tools/call
    user_id: str | None
    request_id: str | None
    compliance_contact: str | None  # who the receiver should involve (dlp.alerts.compliance_contact)
    webhook: str | None
    webhook_secret: str | None  # "SOURCE/NAME" in the tenant's vault
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=new_message_id)

    def __post_init__(self) -> None:
        # Refused without quoting: a string that is not a type name may be the very value the alert must not carry.
        if not self.counts or any(not _ENTITY_TYPE.fullmatch(name) for name in self.counts):
            raise ValueError("a DLP alert names one or more entity types (lower-case names), and nothing else")
        if any(count < 1 for count in self.counts.values()):
            raise ValueError("a DLP alert counts at least one detection of each type it names")

    @property
    def event_type(self) -> str:
        return EVENT_TYPE

    def body(self) -> bytes:
        data = {
            "tenant": self.tenant,
            "types": sorted(self.counts),
            "counts": dict(sorted(self.counts.items())),
            "detections": sum(self.counts.values()),
            "classification": self.classification.label,
            "action": self.action,
            "direction": self.direction,
            "server": self.server,
            "method": self.method,
            "tool": self.tool,
            "user_id": self.user_id,
            "request_id": self.request_id,
            "compliance_contact": self.compliance_contact,
        }
        return webhook_payload(EVENT_TYPE, self.at, data)

    def audit_event(self) -> AuditEvent | None:
        return None  # each detection is audited where the gateway makes it (see the module docstring)


def vault_secrets(vault: Vault) -> SecretReader:
    """Reads DLP webhook secrets (bound to "dlp-alerts") from the tenant's vault, each read audited."""
    return vault_secret_reader(vault, DLP_ALERTS_BINDING, purpose="DLP alert signature")
