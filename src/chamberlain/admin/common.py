"""What the admin API's resources share: recording changes in the audit log first, paging, times, quotas and the
error responses each route declares."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query, Request

from chamberlain.admin.auth import Administrator
from chamberlain.admin.problems import Problem, ProblemError
from chamberlain.audit.emit import keyed_hash
from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditUnavailable
from chamberlain.policy.quotas import QuotaKind, check_can_add
from chamberlain.store.tenants import ensure_tenant
from chamberlain.tenancy.config import TenantConfig
from chamberlain.web.request_id import request_id_of

# No control characters (PostgreSQL refuses NUL in text, and none belongs in a name or an id).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
MAX_INTEGER_KEY = 2**31 - 1  # an INTEGER column's largest value: larger ones would be a driver error, not a miss
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500

PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="the most items to return")]
PageToken = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=2048,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="next_page_token of the previous page (opaque)",
    ),
]

_DESCRIPTIONS = {
    400: "The request cannot be processed (an invalid page token, a malformed value).",
    401: "No valid admin access token or session (with WWW-Authenticate: Bearer).",
    403: "Authenticated, but not an administrator of this tenant, or refused for this caller.",
    404: "No such object in this tenant (another tenant's objects are not found either).",
    409: "The change conflicts with the current state.",
    413: "The request body is too large.",
    422: "The request does not validate; `errors` lists every invalid member.",
    503: "The audit log cannot record the change, so it was not made.",
}
_ALWAYS = (401, 403, 404, 422)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: problem documents for these statuses and the ones every route may answer."""
    return {
        status: {"model": Problem, "description": _DESCRIPTIONS[status]} for status in sorted({*_ALWAYS, *statuses})
    }


# -- the audit log --------------------------------------------------------------------------------------------------


async def record_change(
    admin: Administrator,
    request: Request,
    *,
    target: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    tenant_id: str | None = None,
) -> None:
    """Records an administrative change before it is made. `admin.change` is fail-closed unless the operator
    configured otherwise (audit.fail_closed): when the record cannot be committed, the change is refused (503)."""
    event = AuditEvent(
        action=Action.ADMIN_CHANGE,
        outcome="success",
        tenant=tenant_id or admin.tenant.id,
        actor=Actor("user", admin.user.id),
        target=target,
        request_id=request_id_of(request.scope),
        details={
            "before": dict(before or {}),
            "after": dict(after or {}),
            "via": "admin-api",
            "authenticated_by": admin.via,
            **({"client_id": admin.client_id} if admin.client_id else {}),
            **({"by_tenant": admin.tenant.id} if tenant_id and tenant_id != admin.tenant.id else {}),
        },
    )
    try:
        await admin.tenant.audit.log.record_as_configured(event)
    except AuditUnavailable:
        raise ProblemError(
            503,
            "the audit log cannot be written, so the change was refused",
            kind="audit-unavailable",
            title="Audit log unavailable",
            headers={"Retry-After": "5"},
        ) from None


def username_reference(admin: Administrator, username: str) -> str:
    """A user name is personal data: audit records name an account by a keyed hash of it (as the CLI does)."""
    return "user-name:" + keyed_hash(admin.tenant.audit_hash_key, username)[:16]


# -- paging ---------------------------------------------------------------------------------------------------------


def encode_position(position: str | int) -> str:
    """An opaque token for the page after `position` (the last item's key): base64url of JSON."""
    return base64.urlsafe_b64encode(json.dumps([position]).encode()).rstrip(b"=").decode()


def decode_position(token: str | None, kind: type[str] | type[int]) -> Any:
    if token is None:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        decoded = None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 1
        or type(decoded[0]) is not kind  # bool is an int subclass: compare exactly
        or not _storable(decoded[0])
    ):
        raise ProblemError(400, "page_token is not a token this list returned", kind="invalid-page-token")
    return decoded[0]


def _storable(value: str | int) -> bool:
    if isinstance(value, int):
        return 0 <= value <= MAX_INTEGER_KEY
    try:
        value.encode()  # a lone surrogate from a JSON escape cannot be sent to the database
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


# -- values ---------------------------------------------------------------------------------------------------------


def location(request: Request, path: str) -> str:
    """A path of this admin API as the client reached it (the tenant's mount point included)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/") + path


def instant(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def when(timestamp: float | None) -> datetime | None:
    return instant(timestamp) if timestamp is not None else None


def stored_config(data: Mapping[str, Any] | None) -> TenantConfig:
    """A tenant's stored configuration; one that no longer validates counts as empty (the gateway ignores it too,
    and logs why), so an administrator can still replace it."""
    try:
        return TenantConfig.model_validate(dict(data or {}))
    except ValueError:
        return TenantConfig()


async def write_config_sections(
    admin: Administrator, request: Request, what: str, sections: tuple[str, ...], written: Mapping[str, Any]
) -> None:
    """Replaces `sections` of the admin's tenant's stored configuration with `written` (JSON-ready), recording the
    change first (before: those sections as stored), and applies it in this process now (others within their next
    refresh). The other sections stay as stored; a stored config that no longer validates is replaced, as the
    gateway ignores it too."""
    tenant = admin.tenant
    store = tenant.shared.tenant_store
    row = await store.get(tenant.id)
    config = stored_config(row.config if row is not None else None).model_dump(mode="json", exclude_unset=True)
    await record_change(
        admin,
        request,
        target=f"tenant:{tenant.id}/{what}",
        before={section: config.get(section) for section in sections},
        after=dict(written),
    )
    config.update(written)
    if row is None:
        await ensure_tenant(tenant.database, tenant.id)
    await store.set_config(tenant.id, config)
    await tenant.shared.refresh()


# -- quotas ---------------------------------------------------------------------------------------------------------


async def check_quota(admin: Administrator, kind: QuotaKind) -> None:
    """Refuses (409) to add a user, client or server beyond the tenant's quota."""
    tenant = admin.tenant
    refusal = await check_can_add(tenant.shared.tenant_store, tenant.id, tenant.config.quotas, kind)
    if refusal:
        raise ProblemError(409, refusal, kind="quota-exceeded", title="Quota exceeded")
