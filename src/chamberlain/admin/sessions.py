"""/sessions: live browser sessions (sign-ins to the login, consent and console pages), and ending them.

A session is named by its handle (the first 128 bits of the id's digest): the id itself is a bearer secret and is
never shown. Signing a user out everywhere is DELETE /users/{id}/sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from chamberlain.admin.auth import Admin, Administrator
from chamberlain.admin.common import (
    DEFAULT_PAGE_SIZE,
    PRINTABLE,
    PageSize,
    PageToken,
    decode_position,
    encode_position,
    instant,
    problems,
    record_change,
    when,
)
from chamberlain.admin.models import SessionOut, SessionPage
from chamberlain.admin.problems import ProblemError
from chamberlain.store.browser_sessions import BrowserSession

router = APIRouter(tags=["sessions"])
Handle = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the session's handle")]


@router.get("/sessions", response_model=SessionPage, responses=problems(400), summary="List live browser sessions")
async def list_sessions(
    admin: Admin,
    user_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=PRINTABLE)] = None,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    page_token: PageToken = None,
) -> SessionPage:
    # Newest first; a tenant's live sessions are few enough (one per person and browser) to page in memory.
    start = decode_position(page_token, int) or 0
    found = await admin.tenant.browser_sessions.list(user_id)
    items = found[start : start + page_size]
    more = len(found) > start + page_size
    return SessionPage(
        items=[session_out(session) for session in items],
        next_page_token=encode_position(start + page_size) if more else None,
    )


@router.delete(
    "/sessions/{handle}",
    status_code=204,
    response_class=Response,
    responses=problems(503),
    summary="End a browser session",
)
async def revoke_session(handle: Handle, request: Request, admin: Admin) -> Response:
    sessions = admin.tenant.browser_sessions
    session = next((session for session in await sessions.list() if session.handle == handle), None)
    if session is None:
        raise ProblemError(404, "no such session in this tenant")
    await end_session(admin, request, session)
    return Response(status_code=204)


async def end_session(admin: Administrator, request: Request, session: BrowserSession) -> None:
    """Records the revocation (refused, 503, when the audit log cannot), then ends the session (also the console's)."""
    await record_change(
        admin,
        request,
        target=f"session:{session.handle}",
        before={"user_id": session.user_id},
        after={"revoked": True},
    )
    await admin.tenant.browser_sessions.revoke(session.handle)


def session_out(session: BrowserSession) -> SessionOut:
    created, expires = instant(session.created_at), instant(session.expires_at)
    return SessionOut(
        handle=session.handle,
        user_id=session.user_id,
        created_at=created,
        expires_at=expires,
        last_seen_at=when(session.last_seen_at),
        idle_expires_at=when(session.idle_expires_at()),
        mfa=session.mfa,
        client_id=session.client_id,
        roles=list(session.roles) if session.roles is not None else None,
    )
