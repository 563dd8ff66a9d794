"""The proxy's side of data protection (dlp/): one per proxied request, it knows the caller's clearance and the
server's declared level and external marks, applies dlp/mcp.py to the request and to each answer, and records
what was done: an audit event per message acted on (entity types, counts, levels and actions, never the text),
and, for `alert` actions, a signed webhook to the tenant's compliance contact."""

from __future__ import annotations

import logging
from typing import Any

from chamberlain.audit.events import Action, AuditEvent
from chamberlain.dlp.alerts import Direction, DlpAlert
from chamberlain.dlp.levels import Level
from chamberlain.dlp.messages import Outcome, guard_outgoing, guard_result
from chamberlain.gateway.jsonrpc import ClientMessage, RequestId
from chamberlain.gateway.upstream_credentials import actor_of, user_id_of
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.store.servers import Server
from chamberlain.tenancy.tenant import Tenant

logger = logging.getLogger(__name__)

_GUARDED_METHODS = frozenset({"tools/call", "resources/read", "prompts/get", "resources/list"})


class DataProtection:
    def __init__(self, app: Tenant, server: Server, principal: AccessTokenClaims, request_id: str | None) -> None:
        self.app = app
        self.engine = app.dlp
        self.server = server
        self.principal = principal
        self.request_id = request_id
        config = server.config
        self.declared = Level.parse(config.classification) if config and config.classification else Level.PUBLIC
        self.external = config is not None and config.external
        self.external_tools = config.external_tools if config is not None else ()
        self.awaited: dict[RequestId, tuple[str, str | None]] = {}  # request id -> (method, tool) of answers to judge
        self.request_changed = False  # a redaction changed the client's message: it must be encoded again
        profile = app.policy.profile(principal.roles)
        # Public data is everyone's; every other level must be among the caller's roles' data_classification_access.
        self.clearance = lambda level: level == Level.PUBLIC or profile.permits_classification(level.label)

    def refusal(self, message: ClientMessage) -> str | None:
        """Applies data protection to one client request (in place); the reason it must not go upstream, if any."""
        params = message.params or {}
        tool: str | None = params.get("name") if message.method == "tools/call" else None  # target_name checked it
        if message.id is not None and message.method in _GUARDED_METHODS:
            self.awaited[message.id] = (message.method, tool)
        if tool is None or message.params is None:
            return None
        external = self.external or tool in self.external_tools
        outcome = guard_outgoing(
            self.engine, message.params, "arguments", what="the arguments", target=f"'{tool}'", external=external
        )
        if outcome:
            self._record(outcome, "request", "tools/call", tool)
        self.request_changed = self.request_changed or outcome.changed
        return outcome.refusal

    def guard_answer(self, document: Any) -> bool:
        """Applies data protection to an upstream's answer (a response or a batch of them) in place; True when it
        changed."""
        changed = False
        for response in document if isinstance(document, list) else [document]:
            if not isinstance(response, dict) or "method" in response:
                continue
            awaited = self.awaited.get(response.get("id"))  # type: ignore[arg-type]
            if awaited is None:
                continue
            method, tool = awaited
            outcome = guard_result(
                self.engine, response, method, clearance=self.clearance, declared=self.declared, tool=tool
            )
            if outcome:
                self._record(outcome, "response", method, tool)
            changed = changed or outcome.changed
        return changed

    def _record(self, outcome: Outcome, direction: Direction, method: str, target: str | None) -> None:
        action, result = _what_was_done(outcome, direction)
        details = {
            "action": result,
            "direction": direction,
            "upstream": self.server.name,
            "method": method,
            "level": outcome.level.label,
            "detections": dict(outcome.detections),
            "actions": sorted(f"{entity}:{taken}" for entity, taken in outcome.actions),
            "sources": sorted(outcome.sources),
            "withheld": outcome.withheld,
            "blocked": outcome.blocked,
            "redacted": outcome.redacted,
            "failed_detectors": sorted(outcome.failures),
            "client_id": self.principal.client_id,
        }
        denied = result in ("refuse", "withhold", "block")
        self.app.audit.log.record(
            AuditEvent(
                action=action,
                outcome="denied" if denied else "success",
                tenant=self.app.id,
                actor=actor_of(self.principal),
                target=f"mcp:{self.server.name}/{target}" if target else f"mcp:{self.server.name}",
                reason=outcome.refusal,
                request_id=self.request_id,
                classification=outcome.level.label,
                details=details,
            )
        )
        if outcome.failures:
            logger.warning(
                "data protection: detector(s) %s failed on a %s of %s; treated as restricted",
                ", ".join(sorted(outcome.failures)),
                direction,
                self.server.name,
            )
        if outcome.alerted():
            self._alert(outcome, direction, method, target)

    def _alert(self, outcome: Outcome, direction: Direction, method: str, target: str | None) -> None:
        alerts = self.engine.config.alerts
        counts = {entity: outcome.detections[entity] for entity, taken in outcome.actions if taken == "alert"}
        self.app.shared.dlp_alerts.submit(
            DlpAlert(
                tenant=self.app.id,
                counts=counts,
                classification=outcome.level,
                action="alert",
                direction=direction,
                server=self.server.name,
                method=method,
                tool=target,
                user_id=user_id_of(self.principal),
                request_id=self.request_id,
                compliance_contact=alerts.compliance_contact,
                webhook=alerts.webhook,
                webhook_secret=alerts.webhook_secret,
            )
        )


def _what_was_done(outcome: Outcome, direction: Direction) -> tuple[Action, str]:
    """The audit action for an outcome, and the word the compliance report counts it under."""
    if outcome.refusal is not None and not outcome.blocked:
        return Action.EXTERNAL_LOOKUP_BLOCKED, "refuse"
    if outcome.withheld or outcome.blocked:
        # Items kept from a caller are withheld; a client's message stopped by a `block` action is blocked.
        return (Action.DLP_WITHHELD, "withhold") if direction == "response" else (Action.DLP_DETECTION, "block")
    return Action.DLP_DETECTION, "redact" if outcome.redacted else "allow"
