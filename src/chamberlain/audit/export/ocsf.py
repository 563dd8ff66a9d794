"""Audit events as OCSF 1.3.0 events (https://schema.ocsf.io/1.3.0): the shape SIEMs ingest without a parser.

Three classes: Authentication (3002) for sign-in, MFA and sign-out; Detection Finding (2004) for DLP detections
and blocked external lookups; API Activity (6003) for everything else (an action we do not know yet included).
`metadata.uid` is the event id, so a SIEM can drop the duplicates that at-least-once delivery may send.
Chamberlain's own fields (tenant, target, classification, chain position and hash, details) go in `unmapped`.
Personal fields appear only when the event carries them (the shipper reads them only for sinks configured with
`include_personal`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chamberlain import __version__
from chamberlain.audit.events import Action
from chamberlain.audit.records import StoredEvent

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "Chamberlain", "vendor_name": "Chamberlain project", "version": __version__}


@dataclass(frozen=True, slots=True)
class OcsfClass:
    uid: int
    name: str
    category_uid: int
    category_name: str
    activities: dict[int, str]


AUTHENTICATION = OcsfClass(
    3002, "Authentication", 3, "Identity & Access Management", {1: "Logon", 2: "Logoff", 99: "Other"}
)
DETECTION_FINDING = OcsfClass(2004, "Detection Finding", 2, "Findings", {1: "Create"})
API_ACTIVITY = OcsfClass(
    6003, "API Activity", 6, "Application Activity", {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
)
_LOGON, _LOGOFF = 1, 2
_CREATE, _READ, _UPDATE, _DELETE, _OTHER = 1, 2, 3, 4, 99

_ACTIVITIES: dict[str, tuple[OcsfClass, int]] = {
    Action.SIGN_IN: (AUTHENTICATION, _LOGON),
    Action.MFA: (AUTHENTICATION, _LOGON),
    Action.SIGN_OUT: (AUTHENTICATION, _LOGOFF),
    Action.DLP_DETECTION: (DETECTION_FINDING, _CREATE),
    Action.DLP_WITHHELD: (DETECTION_FINDING, _CREATE),
    Action.EXTERNAL_LOOKUP_BLOCKED: (DETECTION_FINDING, _CREATE),
    # Each of these mints a new token.
    Action.TOKEN_ISSUED: (API_ACTIVITY, _CREATE),
    Action.TOKEN_REFRESHED: (API_ACTIVITY, _CREATE),
    Action.TOKEN_EXCHANGED: (API_ACTIVITY, _CREATE),
    Action.TOKEN_REVOKED: (API_ACTIVITY, _DELETE),
    Action.CONSENT_GIVEN: (API_ACTIVITY, _CREATE),
    Action.CONSENT_WITHDRAWN: (API_ACTIVITY, _DELETE),
    Action.CLIENT_REGISTERED: (API_ACTIVITY, _CREATE),
    Action.SESSION_CREATED: (API_ACTIVITY, _CREATE),
    Action.SESSION_ROTATED: (API_ACTIVITY, _UPDATE),
    Action.SESSION_REVOKED: (API_ACTIVITY, _DELETE),
    Action.CREDENTIAL_READ: (API_ACTIVITY, _READ),
    Action.CREDENTIAL_ROTATED: (API_ACTIVITY, _UPDATE),
    Action.CREDENTIAL_REFUSED: (API_ACTIVITY, _READ),
    Action.MCP_REQUEST: (API_ACTIVITY, _OTHER),  # a tool call may read or change anything upstream
    Action.BUDGET_ALERT: (API_ACTIVITY, _OTHER),
    Action.BUDGET_REFUSED: (API_ACTIVITY, _OTHER),
    Action.ADMIN_CHANGE: (API_ACTIVITY, _UPDATE),  # refined by its before and after: see _activity
    Action.AUDIT_ERASURE: (API_ACTIVITY, _DELETE),
}

# OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High.
_INFORMATIONAL, _LOW, _MEDIUM, _HIGH = 1, 2, 3, 4
_FINDING_SEVERITY = {"restricted": _HIGH, "confidential": _MEDIUM}


def ocsf_class(event: StoredEvent) -> OcsfClass:
    return _ACTIVITIES.get(event.action, (API_ACTIVITY, _OTHER))[0]


def severity_id(event: StoredEvent) -> int:
    """Findings by the classification of the data involved; other events Informational, or Low when refused."""
    if ocsf_class(event) is DETECTION_FINDING:
        return _FINDING_SEVERITY.get(event.classification, _LOW)
    return _INFORMATIONAL if event.outcome == "success" else _LOW


def describe(event: StoredEvent) -> str:
    """A one-line summary a person can read: "auth.sign_in failure: bad_password"."""
    reason = event.public.get("reason")
    return f"{event.action} {event.outcome}" + (f": {reason}" if reason else "")


def to_ocsf(event: StoredEvent) -> dict[str, Any]:
    cls, activity = _activity(event)
    document: dict[str, Any] = {
        "category_uid": cls.category_uid,
        "category_name": cls.category_name,
        "class_uid": cls.uid,
        "class_name": cls.name,
        "activity_id": activity,
        "activity_name": cls.activities[activity],
        "type_uid": cls.uid * 100 + activity,
        "type_name": f"{cls.name}: {cls.activities[activity]}",
        "severity_id": severity_id(event),
        "time": int(event.time * 1000),  # OCSF timestamps are milliseconds since the epoch
        "message": describe(event),
        "metadata": _metadata(event),
        "unmapped": _unmapped(event),
    }
    if cls is DETECTION_FINDING:
        # A finding's status is its triage state (1 New); what the action did is in message and unmapped.
        document["status_id"] = 1
        document["finding_info"] = {"uid": event.event_id, "title": describe(event)}
        document["evidences"] = [_evidence(event)]
        return document
    document["status_id"] = 1 if event.outcome == "success" else 2  # 1 Success, 2 Failure
    if reason := event.public.get("reason"):
        document["status_detail"] = reason
    document["actor"] = _actor(event)
    endpoint = _source_endpoint(event)
    if cls is AUTHENTICATION:
        document["user"] = _authenticated_user(event)
        document["service"] = {"name": "Chamberlain"}  # what was signed in to: OCSF wants a service or dst_endpoint
        document["is_mfa"] = event.action == Action.MFA
        if endpoint is not None:
            document["src_endpoint"] = endpoint
        return document
    # API Activity requires src_endpoint and api.operation.
    document["src_endpoint"] = endpoint or {"name": "unknown"}
    document["api"] = _api(event)
    if target := event.public.get("target"):
        document["resources"] = [{"uid": target}]
    return document


def _activity(event: StoredEvent) -> tuple[OcsfClass, int]:
    cls, activity = _ACTIVITIES.get(event.action, (API_ACTIVITY, _OTHER))
    if event.action == Action.ADMIN_CHANGE:
        details = event.public.get("details") or {}
        if details.get("before") == {} and details.get("after"):
            return cls, _CREATE
        if details.get("before") and details.get("after") == {}:
            return cls, _DELETE
    return cls, activity


def _metadata(event: StoredEvent) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": PRODUCT,
        "uid": event.event_id,
        "tenant_uid": event.tenant,
        "sequence": event.seq,
        "log_name": "audit",
    }
    if request_id := event.public.get("request_id"):
        metadata["correlation_uid"] = request_id
    return metadata


def _unmapped(event: StoredEvent) -> dict[str, Any]:
    chamberlain: dict[str, Any] = {
        "action": event.action,
        "outcome": event.outcome,
        "classification": event.classification,
        "level": event.level,
        "target": event.public.get("target"),
        "hash": event.hash.hex(),  # its place in the tamper-evident chain, to check against `audit proof`
        "details": event.public.get("details") or {},
    }
    extra = {key: value for key, value in (event.personal or {}).items() if key not in _MAPPED_PERSONAL}
    if extra:
        chamberlain["personal"] = extra
    return {"chamberlain": chamberlain}


_MAPPED_PERSONAL = frozenset({"source_ip", "username"})


def _actor(event: StoredEvent) -> dict[str, Any]:
    actor = event.public.get("actor") or {}
    kind, identifier = actor.get("type"), str(actor.get("id", "unknown"))
    if kind == "user":
        return {"user": _user(identifier, event)}
    if kind == "client":
        return {"app_uid": identifier}  # an OAuth client is an application acting for itself
    return {"app_name": identifier}  # a service or Chamberlain itself


def _authenticated_user(event: StoredEvent) -> dict[str, Any]:
    """The account signing in or out: the acting user, else the event's data subject."""
    actor = event.public.get("actor") or {}
    if actor.get("type") == "user":
        return _user(str(actor["id"]), event)
    return _user(event.subject or str(actor.get("id", "unknown")), event)


def _user(uid: str, event: StoredEvent) -> dict[str, Any]:
    user: dict[str, Any] = {"uid": uid, "type_id": 1, "type": "User"}
    if username := (event.personal or {}).get("username"):
        user["name"] = username
    return user


def _source_endpoint(event: StoredEvent) -> dict[str, Any] | None:
    ip = (event.personal or {}).get("source_ip")
    return {"ip": ip} if ip else None


def _api(event: StoredEvent) -> dict[str, Any]:
    details = event.public.get("details") or {}
    api: dict[str, Any] = {"operation": str(details.get("method") or event.action)}
    if server := details.get("server"):
        api["service"] = {"name": str(server)}  # the upstream MCP server the request went to
    if request_id := event.public.get("request_id"):
        api["request"] = {"uid": request_id}
    return api


def _evidence(event: StoredEvent) -> dict[str, Any]:
    evidence: dict[str, Any] = {"actor": _actor(event)}
    if (endpoint := _source_endpoint(event)) is not None:
        evidence["src_endpoint"] = endpoint
    return evidence


def to_json_lines(events: Iterable[StoredEvent]) -> bytes:
    """OCSF events as JSON lines (one compact document per line, UTF-8)."""
    return "".join(
        json.dumps(to_ocsf(event), separators=(",", ":"), ensure_ascii=False) + "\n" for event in events
    ).encode()
