"""Sign-in through the tenant's identity providers (sso/): the redirect out, the answer back, the step-up.

  POST {issuer}/login/sso             home-realm discovery: the email's domain names the provider
  GET  {issuer}/sso/{name}/start      begins a sign-in at a provider (an IdP's app tile may link here)
  GET  {issuer}/sso/{name}/callback   the OIDC authorization response (OIDC Core §3.1.2.5, RFC 6749 §4.1.2)
  POST {issuer}/sso/{name}/acs        the SAML response (SAML Bindings §3.5, HTTP-POST)
  GET  {issuer}/sso/{name}/metadata   the SAML SP's metadata (its entity ID)
  POST {issuer}/login/step-up         the local second factor when the role needs MFA the IdP did not prove

Every answer is checked against the sign-in this browser began (sso/flow.py), then by the protocol module, then
provisioned (sso/provisioning.py) and judged for MFA (sso/mfa.py). Every refusal is a page saying why, with an
`auth.sign_in` audit event naming the reason; an IdP that cannot be reached is a 502 page, never a 500, and
sessions already signed in are untouched by it (they never call the IdP).
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import replace
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chamberlain.audit import emit
from chamberlain.identity.totp import verify_totp
from chamberlain.oauth.authorize import LOGIN_PURPOSE
from chamberlain.sso.config import ProviderConfig
from chamberlain.sso.flow import (
    STEP_UP_TTL,
    PendingSignIn,
    PendingStepUp,
    forget,
    pending_sign_in,
    pending_step_up,
    remember,
)
from chamberlain.sso.identity import FederatedIdentity, SignInRefused
from chamberlain.sso.ldap.config import LdapProviderConfig
from chamberlain.sso.ldap.directory import AUTHN_CACHE
from chamberlain.sso.mfa import SecondFactor, second_factor
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.sso.provisioning import provision
from chamberlain.sso.registry import callback_url, provider_secret
from chamberlain.sso.saml.config import SamlProviderConfig
from chamberlain.store.seen_identifiers import SAML_ASSERTION, SSO_STATE, SeenIdentifiers
from chamberlain.store.users import User
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.web.pages import message_page, render
from chamberlain.web.signed_in import continue_signed_in

logger = logging.getLogger(__name__)

STEP_UP_PURPOSE = "sso-step-up"
_MAX_FORM_FIELD = 1_000_000  # a SAML response with a few certificates and many groups stays far below this


# -- beginning ------------------------------------------------------------------------------------------------------


async def discover(request: Request) -> Response:
    """POST {issuer}/login/sso: the provider that captured the email's domain (home-realm discovery)."""
    app = tenant_of(request)
    fields = await _form(request)
    return_to = fields.get("return_to", "")
    if not app.csrf.check(request, fields.get("csrf_token"), LOGIN_PURPOSE, return_to):
        return message_page(
            "Request expired", "This sign-in form is no longer valid; please start again.", status_code=403
        )
    email = fields.get("email", "").strip()[:320]
    found = app.config.sso.provider_for_email(email)
    if found is None or found[1].kind == "ldap":
        return message_page(
            "No single sign-on for this address",
            "No identity provider signs in addresses of that domain here. Sign in with your user name and "
            "password, or check the address.",
            status_code=404,
        )
    return await begin(app, request, found[0], found[1], return_to=return_to, login_hint=email)


async def start(request: Request) -> Response:
    """GET {issuer}/sso/{name}/start: begins a sign-in at the named provider."""
    app, name, provider = _named_provider(request)
    if provider is None or isinstance(provider, LdapProviderConfig):
        return _no_such_provider()
    return_to = request.query_params.get("return_to", "")[:4096]
    login_hint = request.query_params.get("login_hint", "")[:320] or None
    return await begin(app, request, name, provider, return_to=return_to, login_hint=login_hint)


async def begin(
    app: Tenant, request: Request, name: str, provider: ProviderConfig, *, return_to: str, login_hint: str | None
) -> Response:
    """Redirects the browser to the provider, remembering the sign-in in a sealed cookie."""
    registry = app.shared.sso
    pending = PendingSignIn.new(name, return_to, oidc=isinstance(provider, OidcProviderConfig))
    try:
        if isinstance(provider, OidcProviderConfig):
            url = await registry.relying_party(app, name, provider).authorization_url(
                redirect_uri=callback_url(app, name),
                state=pending.id,
                nonce=pending.nonce,
                code_verifier=pending.verifier,
                login_hint=login_hint,
            )
        elif isinstance(provider, SamlProviderConfig):
            service_provider = await registry.service_provider(app, name, provider)
            url, request_id = service_provider.redirect_url(relay_state=pending.id)
            pending = replace(pending, request_id=request_id)
        else:
            return _no_such_provider()
    except SignInRefused as refused:
        return refused_page(app, request, name, provider.kind, refused)
    response = RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    remember(app, response, pending)
    return response


# -- answers --------------------------------------------------------------------------------------------------------


async def oidc_callback(request: Request) -> Response:
    """GET {issuer}/sso/{name}/callback: the authorization response of an OIDC provider."""
    app, name, provider = _named_provider(request)
    if not isinstance(provider, OidcProviderConfig):
        return _no_such_provider()
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    params = dict(pairs)
    pending = pending_sign_in(app, request)
    try:
        if len(params) != len(pairs):  # RFC 6749 §3.1: no parameter more than once
            raise SignInRefused("duplicate_parameter", "The identity provider's answer is malformed.", status_code=400)
        await _check_answer(app, pending, name, params.get("state", ""))
        assert pending is not None  # _check_answer
        secret = None
        if provider.client_secret is not None:
            secret = await provider_secret(app, provider.client_secret, purpose="OIDC client authentication")
        identity = await app.shared.sso.relying_party(app, name, provider).complete(
            redirect_uri=callback_url(app, name),
            params=params,
            code_verifier=pending.verifier,
            nonce=pending.nonce,
            client_secret=secret,
        )
    except SignInRefused as refused:
        return _ended(app, refused_page(app, request, name, "oidc", refused))
    return await signed_in_through(app, request, identity, pending.return_to, method="oidc")


async def saml_acs(request: Request) -> Response:
    """POST {issuer}/sso/{name}/acs: the SAML response of a SAML provider (HTTP-POST binding)."""
    app, name, provider = _named_provider(request)
    if not isinstance(provider, SamlProviderConfig):
        return _no_such_provider()
    fields = await _form(request)
    pending = pending_sign_in(app, request)
    try:
        # An answer we did not ask for in this browser (IdP-initiated, or another browser's) is refused: the RelayState
        # must be the sign-in this cookie holds, and the response must answer its AuthnRequest.
        await _check_answer(app, pending, name, fields.get("RelayState", ""))
        assert pending is not None  # _check_answer
        service_provider = await app.shared.sso.service_provider(app, name, provider)
        assertion = service_provider.complete(
            saml_response=fields.get("SAMLResponse", ""), request_id=pending.request_id
        )
        seen = SeenIdentifiers(app.database, app.id)
        if not await seen.claim(SAML_ASSERTION, assertion.assertion_id, assertion.not_on_or_after):
            raise SignInRefused("saml_replay", "This sign-in answer was already used; please sign in again.")
    except SignInRefused as refused:
        return _ended(app, refused_page(app, request, name, "saml", refused))
    return await signed_in_through(app, request, assertion.identity, pending.return_to, method="saml")


async def saml_metadata(request: Request) -> Response:
    """GET {issuer}/sso/{name}/metadata: what the IdP's administrator imports (SAML Metadata §2.4.4)."""
    app, name, provider = _named_provider(request)
    if not isinstance(provider, SamlProviderConfig):
        return _no_such_provider()
    try:
        service_provider = await app.shared.sso.service_provider(app, name, provider)
    except SignInRefused as refused:  # the SP's key cannot be read or made (the vault): a page, never a 500
        return refused_page(app, request, name, "saml", refused)
    return Response(service_provider.metadata(), media_type="application/samlmetadata+xml")


async def _check_answer(app: Tenant, pending: PendingSignIn | None, name: str, state: str) -> None:
    if pending is None or pending.provider != name or not hmac.compare_digest(state.encode(), pending.id.encode()):
        raise SignInRefused(
            "state_mismatch",
            "This sign-in was not started in this browser, or took too long. Please sign in again.",
            status_code=400,
        )
    if not await SeenIdentifiers(app.database, app.id).claim(SSO_STATE, pending.id, pending.expires_at):
        raise SignInRefused("state_replay", "This sign-in answer was already used; please sign in again.")


# -- after the IdP --------------------------------------------------------------------------------------------------


async def signed_in_through(
    app: Tenant, request: Request, identity: FederatedIdentity, return_to: str, *, method: str
) -> Response:
    """The identity, proven by its provider: provisioned, judged for MFA, then signed in (or refused). The sign-in
    cookie ends here, or holds the step-up when a local second factor is still to come."""
    try:
        provisioned = await provision(app, identity)
    except SignInRefused as refused:
        return _ended(app, refused_page(app, request, identity.provider, method, refused, identity=identity))
    user = provisioned.user
    verdict = second_factor(app, user, identity)
    if verdict is SecondFactor.MISSING:
        missing = SignInRefused(
            "mfa_required",
            "Your role requires multi-factor sign-in, and your identity provider did not report one. Sign in again "
            "with a second factor at your identity provider, or ask an administrator to enrol a local one.",
        )
        return _ended(app, refused_page(app, request, identity.provider, method, missing, identity=identity, user=user))
    if verdict is SecondFactor.STEP_UP:
        return _step_up_page(app, request, user, identity.provider, return_to)
    if AUTHN_CACHE in identity.authn_context:
        method = "ldap-cache"  # the directory was down: vouched for by what it said within the cache TTL
    audit_sign_in(app, request, method, identity.provider, user.id, identity.email or identity.subject, None)
    return _ended(app, await continue_signed_in(app, request, user, return_to, mfa=identity.mfa))


def _step_up_page(
    app: Tenant, request: Request, user: User, provider: str, return_to: str, *, error: str | None = None
) -> Response:
    browser_value, fresh = app.csrf.browser_value(request)
    context = {
        "csrf_token": app.csrf.token(browser_value, STEP_UP_PURPOSE, user.id),
        "username": user.username,
        "error": error,
        "base": app.path(""),
    }
    response = render("step_up.html", context, status_code=401 if error else 200)
    if fresh:
        app.csrf.set_cookie(response, browser_value)
    remember(app, response, PendingStepUp(user.id, provider, return_to, time.time() + STEP_UP_TTL))
    return response


async def submit_step_up(request: Request) -> Response:
    """POST {issuer}/login/step-up: the local TOTP (RFC 6238) after an IdP that did not prove a second factor."""
    app = tenant_of(request)
    fields = await _form(request)
    pending = pending_step_up(app, request)
    user = await app.users.get(pending.user_id) if pending is not None else None
    if (
        pending is None
        or user is None
        or not app.csrf.check(request, fields.get("csrf_token"), STEP_UP_PURPOSE, pending.user_id)
    ):
        return message_page("Request expired", "This form is no longer valid; please sign in again.", status_code=403)
    if user.disabled or user.totp_secret is None:
        return _ended(app, message_page("Sign-in refused", "Please sign in again.", status_code=403))
    settings = app.settings.login
    if user.locked_until is not None and user.locked_until > time.time():
        return _ended(
            app, message_page("Account locked", "Too many failed attempts: try again later.", status_code=403)
        )
    code = fields.get("totp", "")
    if not verify_totp(user.totp_secret, user.id, code, app.master_key, valid_window=settings.totp_valid_window):
        await app.users.record_failed_login(
            user.id, max_attempts=settings.max_failed_attempts, lockout_seconds=settings.lockout_seconds
        )
        audit_sign_in(app, request, "totp", pending.provider, user.id, user.username, "totp_invalid")
        return _step_up_page(app, request, user, pending.provider, pending.return_to, error="That code is not right.")
    audit_sign_in(app, request, "totp", pending.provider, user.id, user.username, None)
    return _ended(app, await continue_signed_in(app, request, user, pending.return_to, mfa=True))


# -- pages and audit ------------------------------------------------------------------------------------------------


def refused_page(
    app: Tenant,
    request: Request,
    provider: str,
    method: str,
    refused: SignInRefused,
    *,
    identity: FederatedIdentity | None = None,
    user: User | None = None,
    username: str = "",
) -> Response:
    """The page saying why a sign-in through `provider` was refused, and its audit event."""
    logger.info("sso: sign-in through %s refused in tenant %s: %s", provider, app.id, refused.reason)
    name = (identity.email or identity.subject) if identity is not None else username
    audit_sign_in(app, request, method, provider, user.id if user else None, name, refused.reason)
    heading = "Identity provider unavailable" if refused.status_code == 502 else "Sign-in refused"
    return message_page(heading, refused.message, status_code=refused.status_code)


def audit_sign_in(
    app: Tenant, request: Request, method: str, provider: str, user_id: str | None, name: str, reason: str | None
) -> None:
    """An `auth.sign_in` event through a provider (`auth.mfa` for a step-up); `name` is kept only as a keyed hash."""
    emit.sign_in(
        app.audit.log,
        request,
        app.id,
        user_id=user_id,
        username_hash=emit.keyed_hash(app.audit_hash_key, name),
        outcome="failure" if reason else "success",
        reason=reason,
        method=method,
        provider=provider,
    )


def _ended(app: Tenant, response: Response) -> Response:
    """However an answer ended, the sign-in it answered is over."""
    forget(app, response)
    return response


def _named_provider(request: Request) -> tuple[Tenant, str, ProviderConfig | None]:
    """The request's tenant, the provider name in its path, and that provider's configuration (None: no such one)."""
    app = tenant_of(request)
    name = str(request.path_params["name"])
    return app, name, app.config.sso.providers.get(name)


def _no_such_provider() -> Response:
    return message_page(
        "No such identity provider", "There is no identity provider of that name here.", status_code=404
    )


async def _form(request: Request) -> dict[str, str]:
    form = await request.form(max_part_size=_MAX_FORM_FIELD)
    return {name: value for name, value in form.items() if isinstance(value, str)}
