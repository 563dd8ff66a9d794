"""`chamberlain compliance-report`: which controls of a framework the audit log and the configuration evidence.

A report covers one tenant and one period. The events of the period are read once and tallied (`EventTally`); what
the store holds (users and their second factors, signing keys, upstream credentials) comes from the security scan's
`Inventory`. Each measure (MFA coverage, failed sign-ins, privileged actions…) judges one aspect and gives a status,
its figures and its evidence (event counts and ids); a framework is a list of controls, each naming the framework's
own reference and the measure that evidences it. Reports never decrypt personal fields: people appear as stable
ids, and the accounts targeted by failed sign-ins as keyed hashes (HMAC-SHA256 under a key derived from the master
key), so the same account has the same hash in every report without being named in any.

JSON shape (`REPORT_JSON_SCHEMA` below is the contract):
    {"report": "compliance", "version": 1, "framework": "soc2", "framework_name": "SOC 2 …", "tenant": "default",
     "period": {"label": "30d", "since": "2026-01-01T00:00:00Z", "until": "…"}, "generated_at": "…",
     "summary": {"evidenced": 4, "gap": 2, "not_applicable": 1},
     "controls": [{"id": "soc2-cc6.1-mfa", "reference": "CC6.1", "title": "…", "status": "gap", "summary": "…",
                   "figures": {"users": 5, "enrolled": 3, "coverage_percent": 60.0, …},
                   "evidence": {"event_count": 12, "event_ids": ["…"], "store": {"users": 5}}}]}
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, select_autoescape

from chamberlain.audit.emit import keyed_hash
from chamberlain.audit.events import Action
from chamberlain.audit.records import StoredEvent
from chamberlain.audit.security_scan import DAY, Inventory, ScanLimits, events_in, server_credential_target
from chamberlain.settings import Settings
from chamberlain.store.database import Database

Framework = Literal["soc2", "hipaa", "gdpr", "sox"]
Status = Literal["evidenced", "gap", "not_applicable"]
STATUSES: tuple[Status, ...] = ("evidenced", "gap", "not_applicable")
MAX_EVENT_IDS = 20  # evidence lists this many event ids per control; the count covers all of them
TOP = 5
_LIMITS = ScanLimits()
# admin.change targets that grant or take away access: the evidence of provisioning and access reviews.
_ACCESS_TARGET_KINDS = ("user:", "role", "client:", "grant:", "consent:")


# -- the period --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    since: float
    until: float  # exclusive


_DAYS = re.compile(r"([1-9][0-9]{0,3})d")
_RANGE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.\.([0-9]{4}-[0-9]{2}-[0-9]{2})")
_QUARTER = re.compile(r"([0-9]{4})-[Qq]([1-4])")


def parse_period(text: str, now: datetime | None = None) -> Period:
    """`30d` (the last 30 days), `2026-01-01..2026-03-31` (whole UTC days, both included), `quarter` (this calendar
    quarter so far) or `2026-Q1` (a calendar quarter). Raises ValueError with a message for the user."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if match := _DAYS.fullmatch(text):
        return Period(text, (now - timedelta(days=int(match[1]))).timestamp(), now.timestamp())
    if match := _RANGE.fullmatch(text):
        try:
            first, last = date.fromisoformat(match[1]), date.fromisoformat(match[2])
        except ValueError as problem:
            raise ValueError(f"{text!r} has an invalid date ({problem})") from None
        if last < first:
            raise ValueError(f"{text!r} ends before it starts")
        return Period(text, _midnight(first), _midnight(last + timedelta(days=1)))
    if text == "quarter":
        start = _quarter_start(now.year, (now.month - 1) // 3 + 1)
        return Period(f"{now.year}-Q{(now.month - 1) // 3 + 1} to date", _midnight(start), now.timestamp())
    if match := _QUARTER.fullmatch(text):
        year, quarter = int(match[1]), int(match[2])
        end = _quarter_start(year + 1, 1) if quarter == 4 else _quarter_start(year, quarter + 1)
        return Period(f"{year}-Q{quarter}", _midnight(_quarter_start(year, quarter)), _midnight(end))
    raise ValueError(f"{text!r} is not a period: use 30d, 2026-01-01..2026-03-31, quarter or 2026-Q1")


def _quarter_start(year: int, quarter: int) -> date:
    return date(year, 3 * (quarter - 1) + 1, 1)


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


# -- tallying the period's events --------------------------------------------------------------------------------


@dataclass
class EventTally:
    """What the measures need from the events, gathered in one pass without keeping the events."""

    target_key: bytes  # keys the hashes of sign-in targets
    total: int = 0
    purged: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, outcome) -> events
    ids: dict[str, list[str]] = field(default_factory=dict)  # evidence kind -> the first event ids
    classifications: Counter[str] = field(default_factory=Counter)
    failed_sign_in_targets: Counter[str] = field(default_factory=Counter)  # keyed hash -> failures
    denial_reasons: Counter[str] = field(default_factory=Counter)
    dlp_actions: Counter[str] = field(default_factory=Counter)
    privileged_actors: Counter[str] = field(default_factory=Counter)
    access_changes: int = 0
    changes_without_before_after: int = 0

    def add(self, event: StoredEvent) -> None:
        self.total += 1
        self.counts[(event.action, event.outcome)] += 1
        self.classifications[event.classification] += 1
        self._note("all", event)
        if event.purged:
            self.purged += 1
            return
        public = event.public
        details: dict[str, Any] = public["details"] if isinstance(public.get("details"), dict) else {}
        action = event.action
        if action in (Action.SIGN_IN, Action.MFA):
            if action == Action.MFA:
                self._note("mfa", event)
            if event.outcome != "success":
                self._note("failed_sign_in", event)
                self.failed_sign_in_targets[self.keyed(_sign_in_target(public, details))] += 1
        elif action == Action.MCP_REQUEST:
            self._note("mcp_request", event)
            if event.outcome == "denied":
                self.denial_reasons[str(public.get("reason") or "unspecified")] += 1
        elif action in (Action.DLP_DETECTION, Action.DLP_WITHHELD, Action.EXTERNAL_LOOKUP_BLOCKED):
            self._note("dlp", event)
            self.dlp_actions[str(details.get("action") or action)] += 1
        elif action == Action.CREDENTIAL_ROTATED:
            self._note("credential_rotated", event)
        elif action == Action.AUDIT_ERASURE:
            self._note("erasure", event)
        if action in (Action.ADMIN_CHANGE, Action.CREDENTIAL_READ):
            self._note("privileged", event)
            self.privileged_actors[_actor_of(public)] += 1
        if action == Action.ADMIN_CHANGE:
            self._note("change", event)
            # A summary-level record has no details at all: it cannot show what changed (SOX change evidence).
            if "before" not in details or "after" not in details:
                self.changes_without_before_after += 1
                self._note("change_incomplete", event)
            if str(public.get("target") or "").startswith(_ACCESS_TARGET_KINDS):
                self.access_changes += 1
                self._note("access_change", event)
        if action in (Action.CONSENT_WITHDRAWN, Action.SESSION_REVOKED, Action.TOKEN_REVOKED):
            self._note("access_change", event)
            self.access_changes += 1

    def keyed(self, value: str) -> str:
        return keyed_hash(self.target_key, value)[:16]

    def count(self, *actions: str, outcome: str | None = None) -> int:
        return sum(n for (action, result), n in self.counts.items() if action in actions and outcome in (None, result))

    def evidence(self, kind: str, count: int, **store: Any) -> Evidence:
        return Evidence(count, tuple(self.ids.get(kind, ())), store)

    def _note(self, kind: str, event: StoredEvent) -> None:
        ids = self.ids.setdefault(kind, [])
        if len(ids) < MAX_EVENT_IDS:
            ids.append(event.event_id)


def _sign_in_target(public: dict[str, Any], details: dict[str, Any]) -> str:
    """The account tried: the user when it exists, else the keyed hash of the name typed (audit/emit.py)."""
    target = public.get("target")
    if isinstance(target, str) and target:
        return target
    username_hash = details.get("username_hash")
    return f"username:{username_hash}" if isinstance(username_hash, str) else _actor_of(public)


def _actor_of(public: dict[str, Any]) -> str:
    actor = public.get("actor")
    return f"{actor.get('type')}:{actor.get('id')}" if isinstance(actor, dict) else "unknown"


# -- measures: one aspect judged from the tally, the inventory and the settings ----------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    event_count: int
    event_ids: tuple[str, ...]
    store: dict[str, Any]  # facts read from the store or the configuration


@dataclass(frozen=True, slots=True)
class Assessment:
    status: Status
    summary: str
    figures: dict[str, Any]
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class Observations:
    tally: EventTally  # the period's events
    inventory: Inventory  # the store as it is now
    settings: Settings
    period: Period
    now: float = field(default_factory=time.time)  # ages of keys and accounts are measured now, like the inventory


Measure = Callable[[Observations], Assessment]


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 100.0


def _top(counter: Counter[str]) -> list[dict[str, Any]]:
    return [{"value": value, "count": count} for value, count in counter.most_common(TOP)]


def mfa_coverage(seen: Observations) -> Assessment:
    active = [user for user in seen.inventory.users if not user.disabled]
    enrolled = sum(user.mfa for user in active)
    admins = [user for user in active if user.administrator]
    admins_enrolled = sum(user.mfa for user in admins)
    mfa_events = seen.tally.count(Action.MFA)
    figures = {
        "users": len(active),
        "enrolled": enrolled,
        "coverage_percent": _percent(enrolled, len(active)),
        "administrators": len(admins),
        "administrators_enrolled": admins_enrolled,
        "mfa_sign_ins": seen.tally.count(Action.MFA, outcome="success"),
    }
    summary = (
        f"{enrolled}/{len(active)} active users = {figures['coverage_percent']} % have a second factor; "
        f"{admins_enrolled}/{len(admins)} administrators."
    )
    status: Status = "evidenced" if enrolled == len(active) else "gap"
    return Assessment(status, summary, figures, seen.tally.evidence("mfa", mfa_events, users=len(active)))


def access_reviews(seen: Observations) -> Assessment:
    active = [user for user in seen.inventory.users if not user.disabled]
    stale_after = seen.now - 90 * DAY
    stale = [user for user in active if (user.last_login_at or 0.0) < stale_after]
    figures = {
        "access_changes": seen.tally.access_changes,
        "active_users": len(active),
        "disabled_users": len(seen.inventory.users) - len(active),
        "users_without_sign_in_90_days": len(stale),
        "active_clients": len(seen.inventory.clients),
    }
    gaps = []
    if not seen.tally.access_changes:
        gaps.append("No access was granted, changed or withdrawn in the period: no review is evidenced.")
    if stale:
        gaps.append(f"{len(stale)} enabled accounts have not signed in for 90 days.")
    summary = " ".join(gaps) or f"{seen.tally.access_changes} access changes recorded; no stale accounts."
    evidence = seen.tally.evidence("access_change", seen.tally.access_changes, users=len(seen.inventory.users))
    return Assessment("gap" if gaps else "evidenced", summary, figures, evidence)


def access_enforcement(seen: Observations) -> Assessment:
    allowed = seen.tally.count(Action.MCP_REQUEST, outcome="success")
    denied = seen.tally.count(Action.MCP_REQUEST, outcome="denied")
    figures = {
        "requests_allowed": allowed,
        "requests_denied": denied,
        "top_denial_reasons": _top(seen.tally.denial_reasons),
        "roles": len(seen.settings.roles.enterprise_roles),
    }
    total = seen.tally.count(Action.MCP_REQUEST)
    if not total:
        return Assessment(
            "not_applicable",
            "No MCP requests in the period.",
            figures,
            seen.tally.evidence("mcp_request", 0),
        )
    summary = f"{total} MCP requests decided by role policy: {allowed} allowed, {denied} denied."
    return Assessment("evidenced", summary, figures, seen.tally.evidence("mcp_request", total))


def credential_rotation(seen: Observations) -> Assessment:
    now = seen.now
    signing = [key for key in seen.inventory.signing_keys if key.signing]
    key_age = max((int((now - key.created_at) // DAY) for key in signing), default=0)
    ages = {
        credential.server: None
        if credential.last_rotated_at is None
        else int((now - credential.last_rotated_at) // DAY)
        for credential in seen.inventory.credentials
    }
    overdue = sorted(server for server, age in ages.items() if age is None or age > _LIMITS.max_credential_age_days)
    rotated = seen.tally.count(Action.CREDENTIAL_ROTATED, outcome="success")
    figures = {
        "signing_key_age_days": key_age,
        "signing_key_limit_days": _LIMITS.max_signing_key_age_days,
        "credential_rotations": rotated,
        "upstream_credentials": len(ages),
        "upstream_credentials_overdue": overdue,
    }
    gaps = []
    if key_age > _LIMITS.max_signing_key_age_days:
        gaps.append(f"The token signing key is {key_age} days old.")
    if overdue:
        gaps.append(f"{len(overdue)} upstream credentials are past rotation or have no rotation date.")
    summary = " ".join(gaps) or f"Signing key {key_age} days old; {rotated} credential rotations in the period."
    evidence = seen.tally.evidence(
        "credential_rotated",
        rotated,
        signing_keys=[key.kid for key in signing],
        rotation_targets=[server_credential_target(server) for server in sorted(ages)],
    )
    return Assessment("gap" if gaps else "evidenced", summary, figures, evidence)


def privileged_actions(seen: Observations) -> Assessment:
    count = seen.tally.count(Action.ADMIN_CHANGE, Action.CREDENTIAL_READ)
    figures = {
        "admin_changes": seen.tally.count(Action.ADMIN_CHANGE),
        "credential_reads": seen.tally.count(Action.CREDENTIAL_READ),
        "refused": seen.tally.count(Action.ADMIN_CHANGE, Action.CREDENTIAL_READ, outcome="denied")
        + seen.tally.count(Action.CREDENTIAL_REFUSED),
        "top_actors": _top(seen.tally.privileged_actors),
        "recorded_before_acknowledged": sorted(str(action) for action in seen.settings.audit.fail_closed),
    }
    durable = {Action.ADMIN_CHANGE, Action.CREDENTIAL_READ} <= set(seen.settings.audit.fail_closed)
    if not seen.settings.audit.enabled or not durable:
        summary = "Privileged actions are not all recorded durably before they take effect (audit.fail_closed)."
        return Assessment("gap", summary, figures, seen.tally.evidence("privileged", count))
    summary = f"{count} privileged actions recorded, each durable before it took effect."
    return Assessment("evidenced", summary, figures, seen.tally.evidence("privileged", count))


def change_management(seen: Observations) -> Assessment:
    changes = seen.tally.count(Action.ADMIN_CHANGE)
    incomplete = seen.tally.changes_without_before_after
    figures = {"admin_changes": changes, "without_before_and_after": incomplete}
    if incomplete:
        summary = f"{incomplete} of {changes} admin changes do not record the values before and after."
        return Assessment("gap", summary, figures, seen.tally.evidence("change_incomplete", incomplete))
    summary = f"{changes} admin changes, each with the values before and after."
    return Assessment("evidenced", summary, figures, seen.tally.evidence("change", changes))


def failed_sign_ins(seen: Observations) -> Assessment:
    failures = seen.tally.count(Action.SIGN_IN, Action.MFA) - seen.tally.count(
        Action.SIGN_IN, Action.MFA, outcome="success"
    )
    attempts = seen.tally.count(Action.SIGN_IN, Action.MFA)
    figures = {
        "sign_in_attempts": attempts,
        "failed": failures,
        "distinct_targets": len(seen.tally.failed_sign_in_targets),
        "top_targets_by_keyed_hash": _top(seen.tally.failed_sign_in_targets),
        "lockout_after_failures": seen.settings.login.max_failed_attempts,
    }
    if not attempts:
        return Assessment(
            "gap", "No sign-in events in the period: log-in monitoring is not evidenced.", figures, _no_evidence()
        )
    summary = f"{failures} of {attempts} sign-in attempts failed, against {figures['distinct_targets']} accounts."
    return Assessment("evidenced", summary, figures, seen.tally.evidence("failed_sign_in", failures))


def dlp_incidents(seen: Observations) -> Assessment:
    count = seen.tally.count(Action.DLP_DETECTION, Action.DLP_WITHHELD, Action.EXTERNAL_LOOKUP_BLOCKED)
    figures = {
        "detections": seen.tally.count(Action.DLP_DETECTION),
        "results_withheld": seen.tally.count(Action.DLP_WITHHELD),
        "external_lookups_blocked": seen.tally.count(Action.EXTERNAL_LOOKUP_BLOCKED),
        "by_action": _top(seen.tally.dlp_actions),
    }
    if not count:
        return Assessment("not_applicable", "No DLP detections in the period.", figures, _no_evidence())
    return Assessment(
        "evidenced", f"{count} DLP incidents detected and acted on.", figures, seen.tally.evidence("dlp", count)
    )


def audit_records(seen: Observations) -> Assessment:
    tally = seen.tally
    figures = {
        "events": tally.total,
        "purged_by_retention": tally.purged,
        "by_classification": _top(tally.classifications),
        "default_retention_days": seen.settings.audit.default_retention_days,
        "retention_preset": seen.settings.audit.retention_preset,
    }
    if not seen.settings.audit.enabled or not tally.total:
        summary = "The audit log is disabled." if not seen.settings.audit.enabled else "No events in the period."
        return Assessment("gap", summary, figures, _no_evidence())
    summary = f"{tally.total} events recorded in a hash-chained log ('chamberlain audit verify' proves it intact)."
    return Assessment("evidenced", summary, figures, tally.evidence("all", tally.total))


def session_lifetimes(seen: Observations) -> Assessment:
    settings = seen.settings
    longest_role = max(
        (role.session_duration * 60 for role in settings.roles.enterprise_roles.values() if role.session_duration),
        default=0,
    )
    figures = {
        "session_ttl_seconds": settings.login.session_ttl,
        "longest_role_session_seconds": longest_role,
        "access_token_ttl_seconds": settings.tokens.access_token_ttl,
        "limit_seconds": _LIMITS.max_session_seconds,
    }
    evidence = Evidence(0, (), {"configuration": ["login.session_ttl", "roles.enterprise_roles.*.session_duration"]})
    if max(settings.login.session_ttl, longest_role) > _LIMITS.max_session_seconds:
        return Assessment("gap", "Browser sessions may last longer than 12 hours.", figures, evidence)
    return Assessment("evidenced", "Browser sessions end after 12 hours or less.", figures, evidence)


def erasures(seen: Observations) -> Assessment:
    count = seen.tally.count(Action.AUDIT_ERASURE)
    figures = {"erasures": count}
    if not count:
        return Assessment("not_applicable", "No erasure requests carried out in the period.", figures, _no_evidence())
    summary = f"{count} data subjects' personal fields crypto-shredded; the log still verifies."
    return Assessment("evidenced", summary, figures, seen.tally.evidence("erasure", count))


def _no_evidence() -> Evidence:
    return Evidence(0, (), {})


# -- frameworks --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Control:
    id: str
    reference: str  # the framework's own numbering
    title: str
    measure: Measure


FRAMEWORK_NAMES: dict[Framework, str] = {
    "soc2": "SOC 2 (AICPA Trust Services Criteria 2017)",
    "hipaa": "HIPAA Security Rule (45 CFR Part 164, Subpart C)",
    "gdpr": "GDPR (Regulation (EU) 2016/679)",
    "sox": "SOX IT general controls (§404)",
}

FRAMEWORKS: dict[Framework, tuple[Control, ...]] = {
    "soc2": (
        Control("soc2-cc6.1-mfa", "CC6.1", "Logical access: multi-factor authentication", mfa_coverage),
        Control("soc2-cc6.1-keys", "CC6.1", "Logical access: keys and credentials rotated", credential_rotation),
        Control("soc2-cc6.2-cc6.3-access", "CC6.2, CC6.3", "Access provisioning, removal and review", access_reviews),
        Control("soc2-cc6.3-enforcement", "CC6.3", "Access to MCP servers and tools by role", access_enforcement),
        Control("soc2-cc7.2-sign-ins", "CC7.2", "Monitoring: failed sign-ins", failed_sign_ins),
        Control("soc2-cc7.2-dlp", "CC7.2", "Monitoring: data loss prevention incidents", dlp_incidents),
        Control("soc2-cc7.2-audit", "CC7.2", "Monitoring: tamper-evident audit trail", audit_records),
        Control("soc2-cc8.1-changes", "CC8.1", "Change management: administrative changes", change_management),
    ),
    "hipaa": (
        Control("hipaa-164.312b", "§164.312(b)", "Audit controls", audit_records),
        Control("hipaa-164.312d", "§164.312(d)", "Person or entity authentication", mfa_coverage),
        Control("hipaa-164.308a5iiC", "§164.308(a)(5)(ii)(C)", "Log-in monitoring", failed_sign_ins),
        Control("hipaa-164.308a5iiD", "§164.308(a)(5)(ii)(D)", "Credential management", credential_rotation),
        Control("hipaa-164.308a4", "§164.308(a)(4)", "Information access management", access_reviews),
        Control("hipaa-164.312a1", "§164.312(a)(1)", "Access control", access_enforcement),
        Control("hipaa-164.312a2iii", "§164.312(a)(2)(iii)", "Automatic logoff", session_lifetimes),
        Control("hipaa-164.308a6ii", "§164.308(a)(6)(ii)", "Security incidents identified", dlp_incidents),
        Control("hipaa-164.308a1iiD", "§164.308(a)(1)(ii)(D)", "System activity review", privileged_actions),
    ),
    "gdpr": (
        Control("gdpr-art30", "Art. 30", "Records of processing activities", audit_records),
        Control("gdpr-art32-authentication", "Art. 32(1)(b)", "Security of processing: authentication", mfa_coverage),
        Control("gdpr-art32-access", "Art. 32(1)(b)", "Security of processing: access control", access_enforcement),
        Control("gdpr-art32-keys", "Art. 32(1)(a)", "Security of processing: keys rotated", credential_rotation),
        Control("gdpr-art33-detection", "Art. 33", "Personal data breaches detected", dlp_incidents),
        Control("gdpr-art17", "Art. 17", "Right to erasure", erasures),
    ),
    "sox": (
        Control("sox-itgc-access-authentication", "ITGC access", "Authentication of users", mfa_coverage),
        Control("sox-itgc-access-review", "ITGC access", "Access provisioning and periodic review", access_reviews),
        Control("sox-itgc-access-privileged", "ITGC access", "Privileged actions recorded", privileged_actions),
        Control("sox-itgc-access-credentials", "ITGC access", "Keys and credentials rotated", credential_rotation),
        Control("sox-itgc-change", "ITGC change management", "Changes with before and after", change_management),
        Control("sox-itgc-operations", "ITGC computer operations", "Failed sign-ins monitored", failed_sign_ins),
    ),
}


# -- the report --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlResult:
    control: Control
    assessment: Assessment

    def as_dict(self) -> dict[str, Any]:
        assessment = self.assessment
        return {
            "id": self.control.id,
            "reference": self.control.reference,
            "title": self.control.title,
            "status": assessment.status,
            "summary": assessment.summary,
            "figures": assessment.figures,
            "evidence": {
                "event_count": assessment.evidence.event_count,
                "event_ids": list(assessment.evidence.event_ids),
                "store": assessment.evidence.store,
            },
        }


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    framework: Framework
    tenant: str
    period: Period
    generated_at: float
    results: tuple[ControlResult, ...]

    def as_dict(self) -> dict[str, Any]:
        statuses = Counter(result.assessment.status for result in self.results)
        return {
            "report": "compliance",
            "version": 1,
            "framework": self.framework,
            "framework_name": FRAMEWORK_NAMES[self.framework],
            "tenant": self.tenant,
            "period": {"label": self.period.label, "since": _iso(self.period.since), "until": _iso(self.period.until)},
            "generated_at": _iso(self.generated_at),
            "summary": {status: statuses[status] for status in STATUSES},
            "controls": [result.as_dict() for result in self.results],
        }


def assess(framework: Framework, observations: Observations, *, now: float | None = None) -> ComplianceReport:
    results = tuple(ControlResult(control, control.measure(observations)) for control in FRAMEWORKS[framework])
    return ComplianceReport(
        framework, observations.settings.tenant, observations.period, time.time() if now is None else now, results
    )


async def tally_events(database: Database, tenant: str, period: Period, target_key: bytes) -> EventTally:
    tally = EventTally(target_key)
    async for event in events_in(database, tenant, since=period.since, until=period.until):
        tally.add(event)
    return tally


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- formats -----------------------------------------------------------------------------------------------------


def to_json(report: ComplianceReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"


CSV_COLUMNS = (
    "framework",
    "control_id",
    "reference",
    "title",
    "status",
    "summary",
    "figures",
    "event_count",
    "event_ids",
)


def to_csv(report: ComplianceReport) -> str:
    """One row per control; figures as a JSON object in one cell. Values from events appear only inside that
    object, so no cell can begin with '=', '+', '-' or '@' and be taken for a spreadsheet formula."""
    document = report.as_dict()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for control in document["controls"]:
        writer.writerow(
            (
                report.framework,
                control["id"],
                control["reference"],
                control["title"],
                control["status"],
                control["summary"],
                json.dumps(control["figures"], ensure_ascii=False, sort_keys=True),
                control["evidence"]["event_count"],
                " ".join(control["evidence"]["event_ids"]),
            )
        )
    return buffer.getvalue()


_templates = Environment(
    loader=PackageLoader("chamberlain", "web/templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)


def to_html(report: ComplianceReport) -> str:
    """A self-contained page (inline CSS, no scripts); every value from events or configuration is escaped."""
    return _templates.get_template("compliance_report.html").render(report=report.as_dict())


FORMATS: dict[str, Callable[[ComplianceReport], str]] = {"json": to_json, "csv": to_csv, "html": to_html}


# The JSON output's contract (JSON Schema 2020-12); tests validate the CLI's output against it.
REPORT_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["report", "version", "framework", "tenant", "period", "generated_at", "summary", "controls"],
    "properties": {
        "report": {"const": "compliance"},
        "version": {"const": 1},
        "framework": {"enum": list(FRAMEWORKS)},
        "framework_name": {"type": "string"},
        "tenant": {"type": "string"},
        "period": {
            "type": "object",
            "required": ["label", "since", "until"],
            "properties": {"label": {"type": "string"}, "since": {"type": "string"}, "until": {"type": "string"}},
        },
        "generated_at": {"type": "string"},
        "summary": {
            "type": "object",
            "required": list(STATUSES),
            "additionalProperties": False,
            "properties": {status: {"type": "integer", "minimum": 0} for status in STATUSES},
        },
        "controls": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "reference", "title", "status", "summary", "figures", "evidence"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string"},
                    "reference": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"enum": list(STATUSES)},
                    "summary": {"type": "string"},
                    "figures": {"type": "object"},
                    "evidence": {
                        "type": "object",
                        "required": ["event_count", "event_ids", "store"],
                        "additionalProperties": False,
                        "properties": {
                            "event_count": {"type": "integer", "minimum": 0},
                            "event_ids": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_EVENT_IDS},
                            "store": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}
