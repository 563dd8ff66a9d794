"""Where a person goes once signed in, whichever way they signed in (local password, IdP, directory): back to the
authorization request, or to the connect or console page the sign-in began at, with a new browser session."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chamberlain.audit import emit
from chamberlain.oauth.authorize import (
    AuthorizationPageError,
    AuthorizationRedirectError,
    AuthorizationRequest,
    parse_request,
)
from chamberlain.sessions.browser import start_session, user_has_mfa
from chamberlain.store.users import User
from chamberlain.tenancy.tenant import Tenant
from chamberlain.web import connect


async def continue_signed_in(
    app: Tenant, request: Request, user: User, return_to: str, *, mfa: bool | None = None
) -> Response:
    """`mfa`: whether this sign-in proved a second factor (None: the user's own enrolment says)."""
    return await signed_in(app, request, user, await authorization_of(app, return_to), return_to, mfa=mfa)


async def signed_in(
    app: Tenant,
    request: Request,
    user: User,
    authorization: AuthorizationRequest | None,
    return_to: str,
    *,
    mfa: bool | None = None,
) -> Response:
    # Back to the authorization request, or to the connect or console page the sign-in began at (this tenant's own).
    if authorization is not None:
        target = app.path(f"/authorize?{authorization.query}")
    else:
        target = connect.return_path(app, return_to) or console_return(app, return_to) or app.path("/login/done")
    response = RedirectResponse(target, status_code=303)
    await start_session(
        app, request, response, user, client_id=authorization.client.client_id if authorization else None
    )
    emit.session_created(app.audit.log, request, app.id, user.id, mfa=user_has_mfa(user) if mfa is None else mfa)
    return response


def console_return(app: Tenant, return_to: str) -> str | None:
    """`return_to` when it is a path of this tenant's admin console, else None: only ever a same-origin path under
    {issuer}/console, never a URL the request could point elsewhere (an open redirect, CWE-601)."""
    console = app.path("/console")
    if not (return_to == console or return_to.startswith((console + "/", console + "?"))):
        return None
    if len(return_to) > 2000 or any(character in return_to for character in "\\\x00\r\n\t") or "/../" in return_to:
        return None
    return return_to


async def authorization_of(app: Tenant, return_to: str) -> AuthorizationRequest | None:
    """The authorization request a sign-in continues, when `return_to` is a valid one of this tenant's."""
    if not return_to:
        return None
    try:
        return await parse_request(app, return_to)
    except (AuthorizationPageError, AuthorizationRedirectError):
        return None
