"""The signed-in person behind a browser request, from the session cookie."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.store.browser_sessions import BrowserSession
from chamberlain.store.users import User
from chamberlain.tenancy.tenant import Tenant

COOKIE = "session"


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    session: BrowserSession
    user: User


async def signed_in(app: Tenant, request: Request) -> SignedIn | None:
    session_id = app.cookies.read(request, COOKIE)
    if not session_id or len(session_id) > 100:
        return None
    session = await app.browser_sessions.get(session_id)
    if session is None:
        return None
    user = await app.users.get(session.user_id)
    if user is None or user.disabled:
        return None
    return SignedIn(session_id, session, user)


async def start_session(app: Tenant, request: Request, response: Response, user: User, *, mfa: bool) -> None:
    """Always a new session id, and the browser's previous session ends: an id planted before sign-in (session
    fixation) is worthless after it."""
    previous = app.cookies.read(request, COOKIE)
    if previous:
        await app.browser_sessions.delete(previous)
    ttl = app.settings.login.session_ttl
    session_id = await app.browser_sessions.create(user.id, mfa=mfa, ttl=ttl)
    app.cookies.write(response, COOKIE, session_id, max_age=ttl)
