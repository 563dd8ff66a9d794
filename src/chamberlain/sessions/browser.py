"""The signed-in person behind a browser request, from the tenant's session cookie.

Lifetimes: the idle timeout is the shortest `session_duration` among the user's roles (else the tenant's
`sessions.idle_timeout`, else `login.session_ttl`), the absolute timeout the tenant's `sessions.absolute_timeout`
(else `login.session_absolute_ttl`, 24 hours). OWASP ASVS 3.3 asks for both.

Rotation: a session remembers the roles and MFA state it was started with. When either has changed by the next
request (an admin granted a role, the user enrolled a second factor), the session gets a new id at once and the
old id stops working, so an id planted or observed before the change never carries the new privileges.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.store.browser_sessions import BrowserSession, NewSession
from chamberlain.store.users import User
from chamberlain.tenancy.tenant import Tenant

COOKIE = "session"
_MAX_ID_LENGTH = 100


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    session: BrowserSession
    user: User
    rotated: bool = False  # the id changed on this request: the response must carry the new cookie


def user_has_mfa(user: User) -> bool:
    return user.totp_secret is not None


async def signed_in(app: Tenant, request: Request) -> SignedIn | None:
    session_id = app.cookies.read(request, COOKIE)
    if not session_id or len(session_id) > _MAX_ID_LENGTH:
        return None
    session = await app.browser_sessions.get(session_id, user_agent=_user_agent(request))
    if session is None:
        return None
    user = await app.users.get(session.user_id)
    if user is None or user.disabled:
        return None
    if session.roles == user.roles and session.mfa == user_has_mfa(user):
        return SignedIn(session_id, session, user)
    await app.browser_sessions.delete(session_id)
    new_id = await _create(app, request, user, auth_time=session.auth_time, client_id=session.client_id)
    rotated = await app.browser_sessions.get(new_id, user_agent=_user_agent(request))
    return SignedIn(new_id, rotated, user, rotated=True) if rotated is not None else None


def keep_cookie(app: Tenant, response: Response, signed: SignedIn | None) -> Response:
    """Sets the rotated session id on a response, if this request rotated it."""
    if signed is not None and signed.rotated:
        _write_cookie(app, response, signed.session_id)
    return response


async def start_session(
    app: Tenant, request: Request, response: Response, user: User, *, client_id: str | None = None
) -> None:
    """Always a new session id, and the browser's previous session ends: an id planted before sign-in (session
    fixation) is worthless after it."""
    previous = app.cookies.read(request, COOKIE)
    if previous and len(previous) <= _MAX_ID_LENGTH:
        await app.browser_sessions.delete(previous)
    session_id = await _create(app, request, user, auth_time=None, client_id=client_id)
    _write_cookie(app, response, session_id)


async def _create(app: Tenant, request: Request, user: User, *, auth_time: float | None, client_id: str | None) -> str:
    idle, absolute = lifetimes(app, user.roles)
    return await app.browser_sessions.create(
        NewSession(
            user_id=user.id,
            mfa=user_has_mfa(user),
            roles=user.roles,
            idle_timeout=idle,
            absolute_timeout=absolute,
            user_agent=_user_agent(request),
            client_id=client_id,
            auth_time=auth_time,
        )
    )


def lifetimes(app: Tenant, roles: tuple[str, ...]) -> tuple[int, int]:
    """(idle, absolute) seconds for a session of someone with these roles in this tenant."""
    sessions, login = app.config.sessions, app.settings.login
    absolute = sessions.absolute_timeout or login.session_absolute_ttl
    minutes = app.policy.profile(roles).session_minutes
    idle = minutes * 60 if minutes is not None else sessions.idle_timeout or login.session_ttl
    return min(idle, absolute), absolute


def _write_cookie(app: Tenant, response: Response, session_id: str) -> None:
    # No Max-Age: the cookie lives as long as the browser, the session as long as the store says.
    app.cookies.write(response, COOKIE, session_id, max_age=None)


def _user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:512]
