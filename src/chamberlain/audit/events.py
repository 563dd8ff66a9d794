"""One typed schema for every security-relevant action.

An event says who did what to which target, with what outcome, when and from where. Values that identify a person
(names, e-mail addresses, IP addresses) go in `personal`: the log stores them encrypted under a key per data subject,
so deleting that key erases them (GDPR Art. 17) while every hash, and so the log's verification, stays intact.
Secrets are never recorded; where a value must be recognisable without being readable, record `keyed_hash(value)`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Outcome = Literal["success", "failure", "denied", "error"]
ActorType = Literal["user", "client", "service", "system"]
AuditLevel = Literal["summary", "detailed", "forensic"]


class Action(StrEnum):
    SIGN_IN = "auth.sign_in"
    MFA = "auth.mfa"
    SIGN_OUT = "auth.sign_out"
    TOKEN_ISSUED = "token.issued"
    TOKEN_REFRESHED = "token.refreshed"
    TOKEN_EXCHANGED = "token.exchanged"
    TOKEN_REVOKED = "token.revoked"
    CONSENT_GIVEN = "consent.given"
    CONSENT_WITHDRAWN = "consent.withdrawn"
    CLIENT_REGISTERED = "client.registered"
    SESSION_CREATED = "session.created"
    SESSION_ROTATED = "session.rotated"
    SESSION_REVOKED = "session.revoked"
    CREDENTIAL_READ = "credential.read"
    CREDENTIAL_ROTATED = "credential.rotated"
    CREDENTIAL_REFUSED = "credential.refused"
    MCP_REQUEST = "mcp.request"  # outcome success (allowed), denied, or error (upstream failed)
    LLM_REQUEST = "llm.request"  # the LLM proxy: a request refused by policy, or its model rewritten by a route
    DLP_DETECTION = "dlp.detection"
    DLP_WITHHELD = "dlp.withheld"  # result items kept from a caller: above their clearance, or blocked by a rule
    EXTERNAL_LOOKUP_BLOCKED = "external_lookup.blocked"
    BUDGET_ALERT = "budget.alert"
    BUDGET_REFUSED = "budget.refused"
    ADMIN_CHANGE = "admin.change"  # details carry "before" and "after"
    AUDIT_ERASURE = "audit.erasure"  # a data subject's personal fields were crypto-shredded


# Actions whose record must be durable before the action is acknowledged, unless configured otherwise: if the
# audit log cannot be written, the action is refused (as Vault does).
FAIL_CLOSED_BY_DEFAULT = frozenset({Action.CREDENTIAL_READ, Action.CREDENTIAL_ROTATED, Action.ADMIN_CHANGE})


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562 §5.7) as 32 hex digits: time-ordered, so the event-id index grows at its end instead of at
    random places (three times the insert rate on SQLite, bench/audit_bench.py), with 74 random bits for uniqueness.
    An event id names a record; it grants nothing, so it need not be unguessable (RFC 9562 §6.9)."""
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | 0b10 << 62
    return f"{value | _random_bits(12) << 64 | _random_bits(62):032x}"


_generator = random.Random(os.urandom(16))  # noqa: S311 - for uniqueness, not secrecy (see above)
_random_bits = _generator.getrandbits
os.register_at_fork(after_in_child=lambda: _generator.seed(os.urandom(16)))  # a forked child must not repeat ids


@dataclass(frozen=True, slots=True)
class Actor:
    type: ActorType
    id: str  # a stable identifier (user id, client id); not personal by itself


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: Action
    outcome: Outcome
    tenant: str
    actor: Actor
    target: str | None = None  # what was acted on: "mcp:github/tools/create_issue", "client:abc", "user:<id>"
    reason: str | None = None  # why it was denied or failed; never message contents or secrets
    request_id: str | None = None
    classification: str = "internal"  # the confidentiality level of what the action touched
    details: Mapping[str, Any] = field(default_factory=dict)  # non-personal, JSON-serialisable
    personal: Mapping[str, str] = field(default_factory=dict)  # e.g. {"username": …, "source_ip": …}
    subject: str | None = None  # the data subject whose key encrypts `personal` (usually the user's id)
    time: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: new_event_id())

    def public_fields(self) -> dict[str, Any]:
        """Everything but the personal fields, as JSON-ready values (the part a report may show to anyone)."""
        return {
            "id": self.id,
            "time": self.time,
            "tenant": self.tenant,
            "action": str(self.action),
            "outcome": self.outcome,
            "actor": {"type": self.actor.type, "id": self.actor.id},
            "target": self.target,
            "reason": self.reason,
            "request_id": self.request_id,
            "classification": self.classification,
            "subject": self.subject,
            "details": dict(self.details),
        }
