"""The sign-in form for local users: POST /login, and GET /login for a sign-in outside an authorization."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.audit import emit
from chamberlain.identity.local_login import LoginOutcome, LoginResult, authenticate
from chamberlain.identity.passwords import PasswordPolicyError, hash_password, verify_password
from chamberlain.oauth.authorize import LOGIN_PURPOSE, AuthorizationRequest, login_page
from chamberlain.sessions.browser import user_has_mfa
from chamberlain.sso.identity import SignInRefused
from chamberlain.sso.ldap.config import LdapProviderConfig
from chamberlain.sso.mfa import required_level
from chamberlain.sso.registry import provider_secret
from chamberlain.store.users import User
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.web.pages import message_page, render
from chamberlain.web.signed_in import authorization_of, console_return, signed_in
from chamberlain.web.sso import audit_sign_in, refused_page, signed_in_through

PASSWORD_PURPOSE = "password-change"

_MESSAGES = {
    LoginOutcome.INVALID: "Incorrect user name, password or code.",
    LoginOutcome.LOCKED: "Too many failed attempts: this account is locked for a while.",
    LoginOutcome.TOTP_REQUIRED: "Enter the six-digit code from your authenticator app.",
}


async def show_login(request: Request) -> Response:
    app = tenant_of(request)
    return_to = console_return(app, request.query_params.get("return_to", "")) or ""
    return login_page(app, request, None, return_to=return_to)


async def submit_login(request: Request) -> Response:
    app = tenant_of(request)
    form = await request.form()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    return_to = fields.get("return_to", "")
    if not app.csrf.check(request, fields.get("csrf_token"), LOGIN_PURPOSE, return_to):
        return message_page(
            "Request expired", "This sign-in form is no longer valid; please start again.", status_code=403
        )
    authorization = await authorization_of(app, return_to)
    username = fields.get("username", "")[:200]
    captured = app.config.sso.provider_for_email(username)
    if captured is not None:
        name, provider = captured
        if isinstance(provider, LdapProviderConfig):
            return await _directory_sign_in(app, request, authorization, name, provider, username, fields)
        return _captured_domain(app, request, authorization, name, username)
    result = await authenticate(
        app.users,
        app.settings.login,
        app.master_key,
        username=username,
        password=fields.get("password", ""),
        totp=fields.get("totp") or None,
    )
    refusal = _missing_second_factor(app, result)
    _audit_sign_in(app, request, username, result, refusal)
    if refusal is not None:
        return message_page("Second factor required", refusal, status_code=403)
    if result.outcome is not LoginOutcome.OK or result.user is None:
        # The form again, continuing what it continued: the authorization request, or the console page.
        return login_page(
            app,
            request,
            authorization,
            return_to=console_return(app, return_to) or "",
            error=_MESSAGES[result.outcome],
            username=username,
            totp_required=result.outcome is LoginOutcome.TOTP_REQUIRED,
            status_code=401,
        )
    if result.user.must_change_password:
        return _change_password_page(app, request, result.user, authorization, return_to)
    return await signed_in(app, request, result.user, authorization, return_to)


def _captured_domain(
    app: Tenant, request: Request, authorization: AuthorizationRequest | None, provider: str, username: str
) -> Response:
    """A captured domain's people sign in through its provider only: a local password is refused, even a right one
    (an account left with a password from before the capture must not become a way around the IdP's policies)."""
    audit_sign_in(app, request, "local", provider, None, username, "domain_captured")
    domain = username.rpartition("@")[2].lower()
    return login_page(
        app,
        request,
        authorization,
        error=f"Addresses at {domain} sign in with single sign-on, not a password here: "
        "use “Continue with single sign-on”.",
        email=username,
        status_code=403,
    )


async def _directory_sign_in(
    app: Tenant,
    request: Request,
    authorization: AuthorizationRequest | None,
    name: str,
    provider: LdapProviderConfig,
    username: str,
    fields: dict[str, str],
) -> Response:
    """A captured domain whose provider is a directory: the password is checked by binding to it (sso/ldap/)."""
    password = fields.get("password", "")
    try:
        if not password:  # RFC 4513 §5.1.2: an empty password would be an unauthenticated bind, which proves nothing
            raise SignInRefused("ldap_invalid_credentials", _MESSAGES[LoginOutcome.INVALID], status_code=401)
        bind_password = await provider_secret(app, provider.bind_password, purpose="LDAP service bind")
        directory = app.shared.sso.directory(app, name, provider)
        identity = await directory.authenticate(username, password, bind_password=bind_password)
    except SignInRefused as refused:
        if refused.reason != "ldap_invalid_credentials":
            return refused_page(app, request, name, "ldap", refused, username=username)
        audit_sign_in(app, request, "ldap", name, None, username, refused.reason)
        error = _MESSAGES[LoginOutcome.INVALID]
        return login_page(app, request, authorization, error=error, username=username, status_code=401)
    return await signed_in_through(app, request, identity, fields.get("return_to", ""), method="ldap")


def _missing_second_factor(app: Tenant, result: LoginResult) -> str | None:
    """`mfa: enforced` (the tenant's `sso.mfa` floor or a role's) admits only users with a second factor: Chamberlain
    enforces it itself, by the same rule as for federated sign-ins (sso/mfa.py)."""
    user = result.user
    if result.outcome is not LoginOutcome.OK or user is None or user_has_mfa(user):
        return None
    if required_level(app, user.roles) != "enforced":
        return None
    return (
        "Your role or organisation requires a second factor, and your account has none yet. Ask an administrator to "
        "enrol you (chamberlain users totp NAME), then sign in again."
    )


def _audit_sign_in(app: Tenant, request: Request, username: str, result: LoginResult, refusal: str | None) -> None:
    if result.outcome is LoginOutcome.TOTP_REQUIRED:
        return  # the password was right and the second factor is still to come: not an outcome yet
    succeeded = result.outcome is LoginOutcome.OK and refusal is None
    emit.sign_in(
        app.audit.log,
        request,
        app.id,
        user_id=result.user.id if result.user else None,
        username_hash=emit.keyed_hash(app.audit_hash_key, username),
        outcome="success" if succeeded else "failure",
        reason=None if succeeded else "mfa_required" if refusal else result.outcome.value,
        second_factor=result.user is not None and result.user.totp_secret is not None,
    )


async def submit_new_password(request: Request) -> Response:
    """POST /login/password: a user who signed in with a one-time password sets their own."""
    app = tenant_of(request)
    form = await request.form()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    return_to = fields.get("return_to", "")
    authorization = await authorization_of(app, return_to)
    ticket = fields.get("ticket", "")
    user_id = app.password_change_tickets.redeem(ticket)
    user = await app.users.get(user_id) if user_id else None
    if user is None or not app.csrf.check(request, fields.get("csrf_token"), PASSWORD_PURPOSE, ticket):
        return message_page("Request expired", "This form is no longer valid; please sign in again.", status_code=403)
    new_password = fields.get("new_password", "")
    error = None
    if new_password != fields.get("confirm_password"):
        error = "The two passwords differ."
    elif verify_password(user.password_hash, new_password):
        error = "Choose a password other than the one-time password."
    else:
        try:
            password_hash = hash_password(new_password)
        except PasswordPolicyError as problem:
            error = str(problem).capitalize() + "."
    if error is not None:
        return _change_password_page(app, request, user, authorization, return_to, error=error)
    await app.users.set_password(user.id, password_hash, must_change_password=False)
    return await signed_in(app, request, user, authorization, return_to)


def _change_password_page(
    app: Tenant,
    request: Request,
    user: User,
    authorization: AuthorizationRequest | None,
    return_to: str,
    *,
    error: str | None = None,
) -> Response:
    ticket = app.password_change_tickets.issue(user.id)
    browser_value, fresh = app.csrf.browser_value(request)
    context = {
        "csrf_token": app.csrf.token(browser_value, PASSWORD_PURPOSE, ticket),
        "ticket": ticket,
        "return_to": authorization.query if authorization else return_to,
        "username": user.username,
        "error": error,
        "base": app.path(""),
    }
    targets = (authorization.redirect_target,) if authorization else ()
    response = render("change_password.html", context, status_code=400 if error else 200, form_targets=targets)
    if fresh:
        app.csrf.set_cookie(response, browser_value)
    return response


async def signed_in_page(request: Request) -> Response:
    return message_page("Signed in", "You are signed in to Chamberlain.", status_code=200, is_error=False)
