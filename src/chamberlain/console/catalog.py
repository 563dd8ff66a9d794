"""What the tenant has configured: MCP servers, the role document (viewed, edited with a preview of the change),
vault credentials (never a value) and data protection (recent detections, rules in force)."""

from __future__ import annotations

import difflib
import json
import time
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from chamberlain.admin.problems import ProblemError
from chamberlain.admin.roles import check_replaceable, replace_roles, roles_from_file
from chamberlain.admin.servers import effective_servers, server_out
from chamberlain.console.access import Viewer
from chamberlain.console.queries import recent_actions
from chamberlain.gateway.activity import WINDOW as ACTIVITY_WINDOW
from chamberlain.policy.roles import InvalidRoles, RolesDocument, check_servers, parse_roles
from chamberlain.vault.rotation import due_for_rotation

MAX_DOCUMENT = 512 * 1024  # characters of a role document typed or pasted into the form
RECENT_DETECTIONS = 50


async def servers(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    document = tenant.roles
    rows = []
    for server in await effective_servers(tenant):
        shown = server_out(tenant, server)
        reaching = sorted(name for name, role in document.enterprise_roles.items() if role.grants(server.name))
        served = server.name in tenant.resources
        activity = tenant.shared.server_activity.of(tenant.id, server.name)
        rows.append({"server": shown, "roles": reaching, "served": served, "activity": activity})
    context = {"title": "MCP servers", "rows": rows, "window_minutes": int(ACTIVITY_WINDOW // 60)}
    return viewer.render("servers.html", context)


# -- roles ----------------------------------------------------------------------------------------------------------


def _as_yaml(document: RolesDocument) -> str:
    return yaml.safe_dump(document.model_dump(mode="json", exclude_unset=True), sort_keys=True, allow_unicode=True)


async def roles(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    document = tenant.roles
    context = {
        "title": "Roles",
        "document": _as_yaml(document),
        "editable": not roles_from_file(tenant),
        "administrative_roles": sorted(
            name for name, role in document.enterprise_roles.items() if role.administrative_functions
        ),
        "warnings": check_servers(document, tenant.resources),
    }
    return viewer.render("roles.html", context)


async def edit_roles(request: Request, viewer: Viewer) -> Response:
    return _editor(viewer, _as_yaml(viewer.tenant.roles))


def _editor(viewer: Viewer, text: str, *, errors: list[str] | None = None, status_code: int = 200) -> Response:
    context = {
        "title": "Edit roles",
        "text": text,
        "errors": errors or [],
        "editable": not roles_from_file(viewer.tenant),
    }
    return viewer.render("roles_edit.html", context, status_code=status_code)


async def preview_roles(request: Request, viewer: Viewer) -> Response:
    text = await _submitted(request)
    parsed = _parse(viewer, text)
    if isinstance(parsed, list):
        return _editor(viewer, text, errors=parsed, status_code=422)
    before = _as_yaml(viewer.tenant.roles).splitlines()
    after = _as_yaml(parsed).splitlines()
    diff = "\n".join(difflib.unified_diff(before, after, "current", "proposed", lineterm="")) or "(no change)"
    context = {
        "title": "Preview role changes",
        "diff": diff,
        "text": text,
        "warnings": check_servers(parsed, viewer.tenant.resources),
    }
    return viewer.render("roles_preview.html", context)


async def save_roles(request: Request, viewer: Viewer) -> Response:
    text = await _submitted(request)
    parsed = _parse(viewer, text)
    if isinstance(parsed, list):
        return _editor(viewer, text, errors=parsed, status_code=422)
    await replace_roles(viewer.administrator, request, parsed)
    return viewer.done("/roles", "roles-saved")


async def _submitted(request: Request) -> str:
    value = (await request.form()).get("document")
    return value[:MAX_DOCUMENT] if isinstance(value, str) else ""


def _parse(viewer: Viewer, text: str) -> RolesDocument | list[str]:
    """The document (YAML, of which JSON is a subset), validated as the admin API validates a PUT /roles body, and
    refused for the same reasons (set in the configuration file; the editor would lose administration)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return [f"This is neither YAML nor JSON{where}."]
    try:
        document = parse_roles(data)
    except InvalidRoles as invalid:
        return [str(problem) for problem in invalid.problems]
    try:
        check_replaceable(viewer.administrator, document)
    except ProblemError as refused:
        return [refused.detail]
    return document


# -- vault ----------------------------------------------------------------------------------------------------------


async def vault(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    now = time.time()
    records = await tenant.vault.records(tenant.id)
    versions = {
        (version.ref.source, version.ref.name): version.version
        for version in await tenant.vault.backend.list(tenant.id)
    }
    due = {
        (item.record.ref.source, item.record.ref.name): item for item in due_for_rotation(records, tenant.vault, now)
    }
    rows = []
    for record in sorted(records, key=lambda record: (record.ref.source, record.ref.name)):
        key = (record.ref.source, record.ref.name)
        pending = due.get(key)
        if pending is not None:
            rotation = "overdue" if pending.overdue else "due soon"
        elif record.health != "ok":
            rotation = f"unhealthy: {record.health_reason or record.health}"
        else:
            rotation = "current"
        rows.append(
            {
                "record": record,
                "version": versions.get(key),
                "age_days": (now - record.rotated_at) / 86_400,
                "rotation": rotation,
                "rotatable": record.rotation is not None,
            }
        )
    return viewer.render("vault.html", {"title": "Vault", "rows": rows})


# -- data protection ------------------------------------------------------------------------------------------------


async def dlp(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    events = await recent_actions(tenant.database, tenant.id, ("dlp.detection", "dlp.withheld"), RECENT_DETECTIONS)
    detections = [{"event": event, "found": _findings(event.public.get("details") or {})} for event in events]
    config = tenant.config.dlp
    rules = json.dumps(config.model_dump(mode="json", exclude_unset=True), indent=2, sort_keys=True)
    context = {"title": "Data protection", "detections": detections, "config": config, "rules": rules}
    return viewer.render("dlp.html", context)


def _findings(details: dict[str, Any]) -> str:
    """What was found, by kind and count only: a detection's matched text is never shown (nor recorded)."""
    shown = []
    for key in ("detections", "level", "action", "upstream"):
        value = details.get(key)
        if isinstance(value, dict):
            shown.append(", ".join(f"{name} ×{count}" for name, count in value.items()))
        elif isinstance(value, list):
            shown.append(", ".join(str(item) for item in value))
        elif isinstance(value, str | int):
            shown.append(f"{key}: {value}")
    return "; ".join(part for part in shown if part) or "[redacted]"
