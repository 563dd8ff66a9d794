"""The sign-in form for local users: POST /login, and GET /login for a sign-in outside an authorization."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chamberlain.identity.local_login import LoginOutcome, authenticate
from chamberlain.oauth.authorize import (
    LOGIN_PURPOSE,
    AuthorizationPageError,
    AuthorizationRedirectError,
    AuthorizationRequest,
    login_page,
    parse_request,
)
from chamberlain.sessions.browser import end_session, start_session
from chamberlain.state import AppState
from chamberlain.web.pages import message_page

_MESSAGES = {
    LoginOutcome.INVALID: "Incorrect user name, password or code.",
    LoginOutcome.LOCKED: "Too many failed attempts: this account is locked for a while.",
    LoginOutcome.TOTP_REQUIRED: "Enter the six-digit code from your authenticator app.",
}


async def show_login(request: Request) -> Response:
    app: AppState = request.app.state.chamberlain
    return login_page(app, request, None)


async def submit_login(request: Request) -> Response:
    app: AppState = request.app.state.chamberlain
    form = await request.form()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    return_to = fields.get("return_to", "")
    if not app.csrf.check(request, fields.get("csrf_token"), LOGIN_PURPOSE, return_to):
        return message_page(
            "Request expired", "This sign-in form is no longer valid; please start again.", status_code=403
        )
    authorization = await _authorization(app, return_to)
    username = fields.get("username", "")[:200]
    result = await authenticate(
        app.users,
        app.settings.login,
        app.master_key,
        username=username,
        password=fields.get("password", ""),
        totp=fields.get("totp") or None,
    )
    if result.outcome is not LoginOutcome.OK or result.user is None:
        return login_page(
            app,
            request,
            authorization,
            error=_MESSAGES[result.outcome],
            username=username,
            totp_required=result.outcome is LoginOutcome.TOTP_REQUIRED,
            status_code=401,
        )
    target = f"/authorize?{return_to}" if authorization else "/login/done"
    response = RedirectResponse(target, status_code=303)
    # A new session id at every sign-in: an id planted before it (session fixation) is worthless.
    await end_session(app, request, response)
    await start_session(app, response, result.user, mfa=result.user.totp_secret is not None)
    return response


async def signed_in_page(request: Request) -> Response:
    return message_page("Signed in", "You are signed in to Chamberlain.", status_code=200, is_error=False)


async def _authorization(app: AppState, return_to: str) -> AuthorizationRequest | None:
    if not return_to:
        return None
    try:
        return await parse_request(app, return_to)
    except (AuthorizationPageError, AuthorizationRedirectError):
        return None
