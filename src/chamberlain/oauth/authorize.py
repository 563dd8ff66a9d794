"""The authorization endpoint (OAuth 2.1 §4.1.1-4.1.2): authenticate the person, ask consent, return a code.

Errors before the client and redirect URI are trusted are shown on a page and never redirected (RFC 6749
§4.1.2.1, RFC 9700 §4.11: no open redirector); every later error goes back to the client with `state` and `iss`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chamberlain.audit import emit
from chamberlain.crypto.tokens import digest, new_secret
from chamberlain.oauth import pkce
from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import (
    ACCESS_DENIED,
    INVALID_REQUEST,
    INVALID_TARGET,
    UNAUTHORIZED_CLIENT,
    UNSUPPORTED_RESPONSE_TYPE,
    OAuthError,
)
from chamberlain.oauth.redirect_uri import redirect_uri_matches
from chamberlain.oauth.scopes import format_scope, granted_scopes
from chamberlain.sessions.browser import SignedIn, keep_cookie, signed_in
from chamberlain.store.grants import AuthorizationCode
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import ProtectedResource, Tenant
from chamberlain.web.pages import message_page, render

MAX_QUERY_LENGTH = 8192
LOGIN_PURPOSE = "login"
CONSENT_PURPOSE = "consent"


class AuthorizationPageError(Exception):
    """Shown to the person, not redirected: the client or its redirect URI cannot be trusted."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthorizationRedirectError(Exception):
    def __init__(self, error: OAuthError, redirect_uri: str, state: str | None) -> None:
        super().__init__(error.error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state


@dataclass(frozen=True)
class AuthorizationRequest:
    query: str  # the request as received: the consent form carries it back verbatim
    client: Client
    redirect_uri: str
    redirect_uri_given: bool
    state: str | None
    scopes: frozenset[str]
    resource: ProtectedResource
    code_challenge: str
    prompt: frozenset[str]

    @property
    def redirect_target(self) -> str:
        """The origin (or private-use scheme) a form's final redirect goes to, for CSP form-action: browsers
        apply it to the redirects that follow a form submission, and signing in or consenting ends in one."""
        parts = urlsplit(self.redirect_uri)
        return f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"


async def authorize(request: Request) -> Response:
    """GET /authorize"""
    app = tenant_of(request)
    return await _handle(app, request, str(request.url.query), await signed_in(app, request), decision=None)


async def decide(request: Request) -> Response:
    """POST /authorize: the consent form's Allow or Deny."""
    app = tenant_of(request)
    form = await request.form()
    query = _form_value(form, "request")
    decision = _form_value(form, "decision")
    if decision not in ("allow", "deny"):
        return message_page("Bad request", "The consent form was incomplete.", status_code=400)
    signed = await signed_in(app, request)
    subject = f"{signed.session_id if signed else ''}\x00{query}"
    if not app.csrf.check(request, _form_value(form, "csrf_token"), CONSENT_PURPOSE, subject):
        return message_page(
            "Request expired",
            "This form is no longer valid. Go back to the application and try again.",
            status_code=403,
        )
    return await _handle(app, request, query, signed, decision=decision)


async def _handle(
    app: Tenant, request: Request, query: str, signed: SignedIn | None, *, decision: str | None
) -> Response:
    try:
        authorization = await parse_request(app, query)
        response = await _continue(app, request, authorization, signed, decision)
    except AuthorizationPageError as failure:
        response = message_page("Cannot sign in to this application", failure.message, status_code=400)
    except AuthorizationRedirectError as failure:
        response = _redirect(app, failure.redirect_uri, failure.state, failure.error.as_dict())
    return keep_cookie(app, response, signed)


async def parse_request(app: Tenant, query: str) -> AuthorizationRequest:
    if len(query) > MAX_QUERY_LENGTH:
        raise AuthorizationPageError("The authorization request is too long.")
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    params = dict(pairs)
    client_id = params.get("client_id")
    if not client_id:
        raise AuthorizationPageError("The request names no client (client_id is missing).")
    try:
        client = await app.client_directory.find(client_id)
    except OAuthError as failure:
        raise AuthorizationPageError(failure.description or "The client's metadata could not be used.") from None
    if client is None:
        raise AuthorizationPageError("This application is not registered here, or its registration was revoked.")
    redirect_uri, given = _redirect_uri(client, params.get("redirect_uri"))
    state = params.get("state")

    def fail(error: str, description: str) -> AuthorizationRedirectError:
        return AuthorizationRedirectError(OAuthError(error, description), redirect_uri, state)

    # RFC 6749 §3.1: request parameters must not be included more than once.
    if len(names) != len(set(names)):
        raise fail(INVALID_REQUEST, "a parameter was sent more than once")
    if params.get("response_type") != "code":
        raise fail(UNSUPPORTED_RESPONSE_TYPE, "only response_type=code is supported")
    if "authorization_code" not in client.metadata.grant_types:
        raise fail(UNAUTHORIZED_CLIENT, "this client is not registered for the authorization_code grant")
    resource = _resource(app, params.get("resource"))
    try:
        challenge = pkce.validate_challenge(params.get("code_challenge"), params.get("code_challenge_method"))
        if resource is None:
            # RFC 8707 §2: the resource must be a protected resource this server issues tokens for.
            raise OAuthError(INVALID_TARGET, "resource must name an MCP server registered here")
        scopes = granted_scopes(
            params.get("scope"),
            known=app.settings.scopes,
            resource_scopes=resource.server.scopes,
            client_scope=client.metadata.scope,
        )
    except OAuthError as failure:
        raise AuthorizationRedirectError(failure, redirect_uri, state) from None
    return AuthorizationRequest(
        query=query,
        client=client,
        redirect_uri=redirect_uri,
        redirect_uri_given=given,
        state=state,
        scopes=scopes,
        resource=resource,
        code_challenge=challenge,
        prompt=frozenset((params.get("prompt") or "").split()),
    )


def _redirect_uri(client: Client, requested: str | None) -> tuple[str, bool]:
    registered = client.metadata.redirect_uris
    if requested is None:
        # OAuth 2.1 §4.1.1: optional only when the client registered exactly one.
        if len(registered) == 1:
            return registered[0], False
        raise AuthorizationPageError("The request has no redirect_uri and the client registered several.")
    if any(redirect_uri_matches(candidate, requested) for candidate in registered):
        return requested, True
    raise AuthorizationPageError("The redirect_uri is not one this application registered.")


def _resource(app: Tenant, requested: str | None) -> ProtectedResource | None:
    return app.resource_by_url(requested) if requested else None


async def _continue(
    app: Tenant, request: Request, authorization: AuthorizationRequest, signed: SignedIn | None, decision: str | None
) -> Response:
    if "login" in authorization.prompt and decision is None:
        signed = None
    if signed is None:
        if "none" in authorization.prompt:
            raise _redirect_error(authorization, "login_required", "the user is not signed in")
        return login_page(app, request, authorization)
    if decision == "deny":
        raise _redirect_error(authorization, ACCESS_DENIED, "the user denied the request")
    consent = {
        "user_id": signed.user.id,
        "client_id": authorization.client.client_id,
        "redirect_uri": authorization.redirect_uri,
        "scope": format_scope(set(authorization.scopes)),
        "resource": authorization.resource.resource,
    }
    if decision == "allow":
        await app.consents.record(**consent)
        emit.consent(
            app.audit.log,
            app.id,
            signed.user.id,
            authorization.client.client_id,
            given=True,
            scope=consent["scope"],
            resource=consent["resource"],
        )
    elif "consent" in authorization.prompt or not await app.consents.exists(**consent):
        if "none" in authorization.prompt:
            raise _redirect_error(authorization, "consent_required", "the user has not approved this client")
        return _consent_page(app, request, signed, authorization)
    return await _issue_code(app, signed, authorization)


async def _issue_code(app: Tenant, signed: SignedIn, authorization: AuthorizationRequest) -> Response:
    code = new_secret()
    now = time.time()
    await app.grants.add_code(
        digest(code),
        AuthorizationCode(
            client_id=authorization.client.client_id,
            user_id=signed.user.id,
            redirect_uri=authorization.redirect_uri,
            redirect_uri_given=authorization.redirect_uri_given,
            scope=format_scope(set(authorization.scopes)),
            resource=authorization.resource.resource,
            code_challenge=authorization.code_challenge,
            auth_time=signed.session.auth_time,
            expires_at=now + app.settings.tokens.authorization_code_ttl,
        ),
    )
    return _redirect(app, authorization.redirect_uri, authorization.state, {"code": code})


def _redirect_error(authorization: AuthorizationRequest, error: str, description: str) -> AuthorizationRedirectError:
    return AuthorizationRedirectError(OAuthError(error, description), authorization.redirect_uri, authorization.state)


def _redirect(app: Tenant, redirect_uri: str, state: str | None, params: dict[str, str]) -> Response:
    # RFC 6749 §4.1.2: echo state; RFC 9207 §2: name the issuer so the client can detect mix-up attacks.
    response_params = {**params, **({"state": state} if state is not None else {}), "iss": app.issuer}
    separator = "&" if urlsplit(redirect_uri).query else "?"
    response = RedirectResponse(redirect_uri + separator + urlencode(response_params), status_code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


def login_page(
    app: Tenant,
    request: Request,
    authorization: AuthorizationRequest | None,
    *,
    error: str | None = None,
    username: str = "",
    email: str = "",
    totp_required: bool = False,
    status_code: int = 200,
    return_to: str = "",
) -> Response:
    """The sign-in form; it continues the authorization request, else goes to `return_to` (a console page)."""
    return_to = _without_prompt_login(authorization) if authorization else return_to
    browser_value, fresh = app.csrf.browser_value(request)
    sso = app.config.sso
    context = {
        "csrf_token": app.csrf.token(browser_value, LOGIN_PURPOSE, return_to),
        "return_to": return_to,
        "client_name": authorization.client.display_name if authorization else None,
        "error": error,
        "username": username,
        "email": email,
        "totp_required": totp_required,
        "single_sign_on": sso.offers_sign_in_redirect,
        "base": app.path(""),
    }
    # The form ends at the client (after consent) or, through single sign-on, at an identity provider.
    targets = ((authorization.redirect_target,) if authorization else ()) + sso.redirect_origins()
    response = render("login.html", context, status_code=status_code, form_targets=targets)
    if fresh:
        app.csrf.set_cookie(response, browser_value)
    return response


def _without_prompt_login(authorization: AuthorizationRequest) -> str:
    """The request to continue after this sign-in. OIDC Core §3.1.2.1 prompt=login asks for one fresh sign-in,
    which the form being shown provides; carrying `login` on would show the form again after every sign-in."""
    if "login" not in authorization.prompt:
        return authorization.query
    pairs = parse_qsl(authorization.query, keep_blank_values=True)
    prompt = " ".join(value for value in sorted(authorization.prompt) if value != "login")
    kept = [(name, prompt if name == "prompt" else value) for name, value in pairs if name != "prompt" or prompt]
    return urlencode(kept)


def _consent_page(app: Tenant, request: Request, signed: SignedIn, authorization: AuthorizationRequest) -> Response:
    browser_value, fresh = app.csrf.browser_value(request)
    subject = f"{signed.session_id}\x00{authorization.query}"
    metadata = authorization.client.metadata
    context = {
        "csrf_token": app.csrf.token(browser_value, CONSENT_PURPOSE, subject),
        "request_query": authorization.query,
        "client_name": authorization.client.display_name,
        "client_id": authorization.client.client_id,
        "client_uri": metadata.client_uri,
        "username": signed.user.username,
        "redirect_host": urlsplit(authorization.redirect_uri).netloc or authorization.redirect_uri,
        "resource": authorization.resource.resource,
        "scopes": sorted(authorization.scopes),
        "base": app.path(""),
    }
    response = render("consent.html", context, form_targets=(authorization.redirect_target,))
    if fresh:
        app.csrf.set_cookie(response, browser_value)
    return response


def _form_value(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
