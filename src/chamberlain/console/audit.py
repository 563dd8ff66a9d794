"""The audit log: filtered, newest first with keyset paging, one event's public fields, a JSON Lines export of the
same filter, and the chain's verification (audit/verify.py). Personal fields stay encrypted: the console never asks
for the subject keys, so it shows what any report may show."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from weakref import WeakKeyDictionary

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from chamberlain.audit.checkpoints import public_keys
from chamberlain.audit.verify import verify_tenant
from chamberlain.console.access import HEADERS, Viewer, not_found
from chamberlain.console.queries import OUTCOMES, AuditFilter, audit_event, audit_page
from chamberlain.store.database import Database

PAGE_SIZE = 50
EXPORT_BATCH = 1000
EXPORT_LIMIT = 100_000  # one download at most; narrow the filter for more
_EVENT_ID = re.compile(r"[0-9a-f]{32}")
_ACTION = re.compile(r"[a-z_.]{1,64}")


@dataclass(frozen=True)
class ChainStatus:
    state: str  # "verified", "failed" or "not verified yet"
    at: float | None = None
    records: int = 0
    problem: str | None = None


# The last verification per store and tenant, in this process: verifying reads the whole chain, so pages show the
# last result and an administrator asks for a new one (POST /console/audit/verify).
_verifications: WeakKeyDictionary[Database, dict[str, ChainStatus]] = WeakKeyDictionary()


def chain_status(database: Database, tenant: str) -> ChainStatus:
    return _verifications.get(database, {}).get(tenant, ChainStatus("not verified yet"))


async def audit(request: Request, viewer: Viewer) -> Response:
    chosen, fields = await _filter(request, viewer)
    raw_before = request.query_params.get("before", "")
    before = int(raw_before) if raw_before.isdigit() and len(raw_before) <= 10 else None
    rows = await audit_page(viewer.tenant.database, viewer.tenant.id, chosen, before=before, limit=PAGE_SIZE + 1)
    shown = rows[:PAGE_SIZE]
    older = {**fields, "before": str(shown[-1].seq)} if len(rows) > PAGE_SIZE else None
    context = {
        "title": "Audit log",
        "fields": fields,
        "outcomes": OUTCOMES,
        "rows": shown,
        "older": older,
        "export": {key: value for key, value in fields.items() if value},
        "chain": chain_status(viewer.tenant.database, viewer.tenant.id),
    }
    return viewer.render("audit.html", context)


async def event(request: Request, viewer: Viewer) -> Response:
    event_id = str(request.path_params["event_id"])
    found = (
        await audit_event(viewer.tenant.database, viewer.tenant.id, event_id) if _EVENT_ID.fullmatch(event_id) else None
    )
    if found is None:
        raise not_found()
    document = orjson.dumps(found.public, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return viewer.render("audit_event.html", {"title": "Audit event", "event": found, "document": document})


async def export(request: Request, viewer: Viewer) -> Response:
    chosen, _ = await _filter(request, viewer)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    headers = {**HEADERS, "Content-Disposition": f'attachment; filename="audit-{viewer.tenant.id}-{stamp}.jsonl"'}
    lines = _lines(viewer.tenant.database, viewer.tenant.id, chosen)
    return StreamingResponse(lines, media_type="application/x-ndjson", headers=headers)


async def _lines(database: Database, tenant: str, chosen: AuditFilter) -> AsyncIterator[bytes]:
    before: int | None = None
    sent = 0
    while sent < EXPORT_LIMIT:
        rows = await audit_page(database, tenant, chosen, before=before, limit=EXPORT_BATCH)
        for row in rows:
            record = {"seq": row.seq, "event_id": row.event_id, "purged": not row.public, **row.public}
            yield orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"
        sent += len(rows)
        if len(rows) < EXPORT_BATCH:
            return
        before = rows[-1].seq


async def verify(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    result = await verify_tenant(tenant.database, tenant.id, await public_keys(tenant.database))
    problem = result.problem.message if result.problem is not None else None
    state = "verified" if result.ok else "failed"
    _verifications.setdefault(tenant.database, {})[tenant.id] = ChainStatus(state, time.time(), result.records, problem)
    return viewer.done("/audit", "chain-verified")


async def _filter(request: Request, viewer: Viewer) -> tuple[AuditFilter, dict[str, str]]:
    """The filter form's fields (as given, to show them again) and the query they make; 400 for a malformed one."""
    params = request.query_params
    fields = {name: params.get(name, "").strip()[:200] for name in ("user", "action", "outcome", "from", "to")}
    subject = None
    if fields["user"]:
        # A user name or id: events name their subject by id.
        found = await viewer.tenant.users.get_by_username(fields["user"])
        subject = found.id if found is not None else fields["user"]
    action = fields["action"] or None
    if action is not None and not _ACTION.fullmatch(action):
        raise HTTPException(400, "An action is a name such as auth.sign_in.")
    outcome = fields["outcome"] or None
    if outcome is not None and outcome not in OUTCOMES:
        raise HTTPException(400, "Unknown outcome.")
    chosen = AuditFilter(subject, action, outcome, _instant(fields["from"]), _instant(fields["to"]))
    return chosen, fields


def _instant(value: str) -> float | None:
    """A datetime-local value (HTML: yyyy-mm-ddThh:mm[:ss]), read as UTC."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise HTTPException(400, "From and To are dates and times such as 2026-01-31T09:00.") from None
