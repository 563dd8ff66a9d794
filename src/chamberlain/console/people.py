"""Users, their browser sessions, and group → role mappings; revoking a session or signing a user out everywhere
goes through the admin API's own functions (admin/sessions.py, admin/users.py), audited the same way."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.admin.groups import repository as group_mappings
from chamberlain.admin.sessions import end_session
from chamberlain.admin.users import sign_out
from chamberlain.console.access import Viewer, not_found
from chamberlain.store.users import User

PAGE_SIZE = 50
_MAX_QUERY = 200


async def users(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    query = request.query_params.get("q", "")[:_MAX_QUERY].strip()
    after = request.query_params.get("after") or None
    if after is not None:
        after = after[:_MAX_QUERY]
    found = await tenant.users.page(after=after, limit=PAGE_SIZE + 1, containing=query)
    shown = found[:PAGE_SIZE]
    more = len(found) > PAGE_SIZE
    context = {
        "title": "Users",
        "q": query,
        "users": [_row(user) for user in shown],
        "next_after": shown[-1].username if more else None,
    }
    return viewer.render("users.html", context)


def _row(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "username": user.username,
        "roles": user.roles,
        "mfa": user.totp_secret is not None,
        "disabled": user.disabled,
        "locked": user.locked_until is not None and user.locked_until > time.time(),
        "last_login_at": user.last_login_at,
    }


async def user(request: Request, viewer: Viewer) -> Response:
    found = await _user(viewer, request)
    tenant = viewer.tenant
    groups = [mapping for mapping in await group_mappings(tenant).list() if set(mapping.roles) & set(found.roles)]
    context = {
        "title": found.username,
        "user": _row(found),
        "groups": groups,
        "sessions": await tenant.browser_sessions.list(found.id),
        "own_session": viewer.session.session.handle,
    }
    return viewer.render("user.html", context)


async def revoke_session(request: Request, viewer: Viewer) -> Response:
    found = await _user(viewer, request)
    handle = str(request.path_params["session_id"])
    sessions = await viewer.tenant.browser_sessions.list(found.id)
    session = next((session for session in sessions if session.handle == handle), None)
    if session is None:
        raise not_found()
    await end_session(viewer.administrator, request, session)
    return viewer.done(f"/users/{found.id}", "session-revoked")


async def sign_out_everywhere(request: Request, viewer: Viewer) -> Response:
    found = await _user(viewer, request)
    await sign_out(viewer.administrator, request, found)
    return viewer.done(f"/users/{found.id}", "signed-out")


async def groups(request: Request, viewer: Viewer) -> Response:
    mappings = await group_mappings(viewer.tenant).list()
    return viewer.render("groups.html", {"title": "Groups", "groups": mappings})


async def _user(viewer: Viewer, request: Request) -> User:
    user_id = str(request.path_params["user_id"])
    found = await viewer.tenant.users.get(user_id) if len(user_id) <= 64 else None
    if found is None:  # the repository is filtered on the tenant: another tenant's user is not found
        raise not_found()
    return found
