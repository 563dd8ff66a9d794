"""Users connect their own grant to an upstream source (issue 6): `{issuer}/connect/{server}` and its callback.

A server whose credential is a per-user refresh token with an `authorization_endpoint` (server_config.py) reaches
its source with each user's own grant. Here the signed-in user gives that grant without an administrator ever
handling the token: Chamberlain is an OAuth client of the upstream's authorization server and runs the
authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636 with S256, OAuth 2.1 §4.1):

  GET {issuer}/connect/{server}   a signed-in user whose roles reach the server is sent to the upstream's
                                  authorization endpoint, with a fresh PKCE challenge and a sealed `state`;
  GET {issuer}/connect/callback   the state is opened and checked, the code exchanged at the upstream's token
                                  endpoint with the credential's own client authentication (the gateway's
                                  TokenEndpoint), and the refresh token stored in the vault as the user's
                                  per-user secret `per_user_secret_name(NAME, user id)`, bound to the server.

The state (RFC 6749 §10.12, RFC 9700 §4.7.1) is AES-256-GCM under a key derived from the master key, with the
tenant as associated data. It holds the server, the user, a digest of the browser session's id, a digest of a
per-flow cookie, the PKCE verifier and the expiry. So a callback is accepted only in the tenant, for the user, in
the browser session that began the flow, within FLOW_TTL seconds, and once: the first callback clears the flow
cookie (whichever replica serves it), and each process also remembers the flows it finished until they expire.
A code someone else obtained (an attacker's own grant) cannot be injected through a victim's callback: the
victim's session holds no state for it, and paired with a state of the victim's own the code fails the PKCE check
at the upstream (RFC 9700 §4.5.3). RFC 9207: when the credential names the upstream's `issuer`, the authorization
response must carry it in `iss` (a mix-up with another server's response is refused).

A navigation from another site (Sec-Fetch-Site: cross-site or same-site) does not start a flow at once but shows a
page to continue from, so another site cannot silently run a flow in the user's browser (which would store
whatever grant the upstream's own session there gives). Redirects go only to configured URLs: the authorization
endpoint, and after sign-in back to this page. Errors are pages; nothing is stored unless a refresh token came
back. No token, code or state reaches a log, an audit event or a page; the answer's access token is dropped (the
gateway refreshes one on the user's first request).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from chamberlain.audit.events import Action, Actor, AuditEvent, Outcome
from chamberlain.audit.log import AuditUnavailable
from chamberlain.crypto.master_key import MasterKey
from chamberlain.crypto.sealed import Sealer, b64url
from chamberlain.gateway.server_config import RefreshTokenCredential, per_user_secret_name, split_vault_reference
from chamberlain.gateway.upstream import UpstreamError
from chamberlain.gateway.upstream_credentials import (
    CONNECT_PATH,
    CredentialProblem,
    TokenRequestRefused,
    VaultAccess,
    current_request_id,
    token_endpoint_for,
)
from chamberlain.net.hosts import origin
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.oauth.authorize import LOGIN_PURPOSE
from chamberlain.sessions.browser import SignedIn, keep_cookie, signed_in
from chamberlain.store.servers import SERVER_NAME
from chamberlain.store.users import User
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.vault.backend import SecretRef, VaultError
from chamberlain.vault.settings import CredentialKind
from chamberlain.web.pages import message_page, render
from chamberlain.web.request_id import request_id_of

logger = logging.getLogger(__name__)

FLOW_TTL = 600  # seconds from the redirect to the upstream until its answer must be back
CALLBACK_PATH = f"{CONNECT_PATH}/callback"
CONNECT_CLIENT = "chamberlain-connect"  # the client named on the vault reads a connect flow causes
FLOW_COOKIE = "connect_"  # + the server's name: one flow per server and browser at a time
RETURN_PREFIX = "connect:"  # the login form's return_to for a sign-in begun here (see `return_path`)
MAX_STATE_LENGTH = 2048
FINISHED_FLOWS_LIMIT = 100_000  # flows one process remembers (they expire after FLOW_TTL)

_STATE_KEY_PURPOSE = "connect-state"  # HKDF info of the state key (RFC 5869): used for nothing else
_VSCHAR = re.compile(r"[\x20-\x7e]+")  # RFC 6749 Appendix A.17: refresh-token = 1*VSCHAR
# RFC 6749 §4.1.2.1 error codes are ASCII; only plain ones are shown and recorded, anything else is "unknown".
_PLAIN_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")
_CROSS_SITE = frozenset({"cross-site", "same-site"})  # Fetch Metadata: a navigation another site started


@dataclass(frozen=True)
class Flow:
    """One connect flow, sealed into its `state`."""

    id: str
    tenant: str
    server: str
    user_id: str
    session: str  # SHA-256 (hex) of the browser session id that began it
    browser: str  # SHA-256 (hex) of the flow cookie's value
    verifier: str  # the PKCE code_verifier (RFC 7636 §4.1)
    expires_at: float


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class StateSealer:
    """Seals a Flow into an opaque `state` and opens it again (crypto/sealed.py: the tenant as associated data, so a
    state is unreadable, cannot be altered, and means nothing to another tenant)."""

    def __init__(self, master_key: MasterKey, tenant: str) -> None:
        self._sealer = Sealer(master_key, _STATE_KEY_PURPOSE, tenant, max_length=MAX_STATE_LENGTH)

    def seal(self, flow: Flow) -> str:
        return self._sealer.seal(asdict(flow))

    def open(self, state: str) -> Flow | None:
        """The flow, or None for anything that is not a state sealed here for this tenant."""
        fields = self._sealer.open(state)
        if fields is None:
            return None
        try:
            return Flow(**fields)
        except TypeError:
            return None


class FinishedFlows:
    """Flows this process has taken a callback for, until they expire: a state is good for one callback."""

    def __init__(self, limit: int = FINISHED_FLOWS_LIMIT) -> None:
        self._limit = limit
        self._expiries: dict[str, float] = {}

    def claim(self, flow: Flow) -> bool:
        """True the first time; False for a flow seen before (and, to stay safe, while the memory is full)."""
        if len(self._expiries) >= self._limit:
            now = time.time()
            self._expiries = {key: expiry for key, expiry in self._expiries.items() if expiry > now}
        key = f"{flow.tenant}\x00{flow.id}"
        if key in self._expiries or len(self._expiries) >= self._limit:
            return False
        self._expiries[key] = flow.expires_at
        return True


_finished = FinishedFlows()


def callback_url(app: Tenant) -> str:
    """The redirect URI registered at the upstream (RFC 6749 §3.1.2), the same in the request and the exchange."""
    return app.issuer + CALLBACK_PATH


def return_path(app: Tenant, return_to: str) -> str | None:
    """Where a sign-in begun at a connect page continues (for web/login.py); None when `return_to` is not one.
    Only this tenant's own connect page: never a URL the request names."""
    if not return_to.startswith(RETURN_PREFIX):
        return None
    server = return_to[len(RETURN_PREFIX) :]
    return app.path(f"{CONNECT_PATH}/{server}") if SERVER_NAME.fullmatch(server) else None


# -- GET /connect/{server} ---------------------------------------------------------------------------------------


async def connect(request: Request) -> Response:
    """GET {issuer}/connect/{server}: begins the flow (or asks the person to sign in first)."""
    app = tenant_of(request)
    server = str(request.path_params["server"])
    found = _connectable(app, server)
    if isinstance(found, Response):
        return found
    signed = await signed_in(app, request)
    if signed is None:
        return _login_page(app, request, server, found)
    return keep_cookie(app, _begin(app, request, server, found, signed), signed)


def _begin(
    app: Tenant, request: Request, server: str, credential: RefreshTokenCredential, signed: SignedIn
) -> Response:
    assert credential.authorization_endpoint is not None  # _connectable
    if app.policy.access(signed.user.roles, server) is None:
        _record(app, request, signed.user.id, "denied", server, "the user's roles do not include this server")
        return message_page("Not permitted", f"Your roles do not include the MCP server '{server}'.", status_code=403)
    if request.headers.get("sec-fetch-site", "").lower() in _CROSS_SITE:
        return _confirmation_page(app, server, credential, signed)
    verifier = secrets.token_urlsafe(48)  # 64 characters of the unreserved set (RFC 7636 §4.1: 43 to 128)
    browser = secrets.token_urlsafe(32)
    flow = Flow(
        id=secrets.token_urlsafe(16),
        tenant=app.id,
        server=server,
        user_id=signed.user.id,
        session=_digest(signed.session_id),
        browser=_digest(browser),
        verifier=verifier,
        expires_at=time.time() + FLOW_TTL,
    )
    # RFC 6749 §4.1.1 with PKCE (RFC 7636 §4.3, S256 only: OAuth 2.1 §4.1.1) and RFC 8707 §2.1's resource.
    params = {
        "response_type": "code",
        "client_id": credential.client_id,
        "redirect_uri": callback_url(app),
        "state": StateSealer(app.master_key, app.id).seal(flow),
        "code_challenge": b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
        "code_challenge_method": "S256",
    }
    if credential.scope is not None:
        params["scope"] = credential.scope
    if credential.resource is not None:
        params["resource"] = credential.resource
    response = RedirectResponse(
        _with_query(credential.authorization_endpoint, params),
        status_code=302,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )
    app.cookies.write(response, FLOW_COOKIE + server, browser, max_age=FLOW_TTL)
    logger.info("connect: user %s began connecting %s (tenant %s)", signed.user.id, server, app.id)
    return response


def _with_query(endpoint: str, params: dict[str, str]) -> str:
    """RFC 6749 §3.1: the endpoint's own query is kept (an administrator may put provider-specific parameters
    there), except parameters this request sets itself, which must not appear twice."""
    parts = urlsplit(endpoint)
    kept = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name not in params]
    return urlunsplit(parts._replace(query=urlencode([*kept, *params.items()])))


def _connectable(app: Tenant, server: str) -> RefreshTokenCredential | Response:
    """The server's credential when users connect it themselves; else the page saying why not."""
    resource = app.resources.get(server) if SERVER_NAME.fullmatch(server) else None
    if resource is None:
        return message_page("No such server", "There is no MCP server of that name here.", status_code=404)
    config = resource.server.config
    credential = config.credential if config is not None else None
    if not isinstance(credential, RefreshTokenCredential) or not credential.connectable:
        return message_page(
            "Nothing to connect",
            f"The MCP server '{server}' does not reach its source with a grant of your own, so there is nothing to "
            "connect here. If it asks you to authorize again, tell an administrator.",
            status_code=404,
        )
    return credential


def _login_page(app: Tenant, request: Request, server: str, credential: RefreshTokenCredential) -> Response:
    """The sign-in form, continuing at this connect page (`return_path`)."""
    assert credential.authorization_endpoint is not None
    return_to = RETURN_PREFIX + server
    browser_value, fresh = app.csrf.browser_value(request)
    context = {
        "csrf_token": app.csrf.token(browser_value, LOGIN_PURPOSE, return_to),
        "return_to": return_to,
        "client_name": f"connect {server}",
        "error": None,
        "username": "",
        "totp_required": False,
        "base": app.path(""),
    }
    # CSP form-action also governs the redirects after the form's submission (browsers check each): the sign-in
    # ends at the upstream's authorization endpoint.
    response = render("login.html", context, form_targets=(origin(credential.authorization_endpoint),))
    if fresh:
        app.csrf.set_cookie(response, browser_value)
    return response


def _confirmation_page(app: Tenant, server: str, credential: RefreshTokenCredential, signed: SignedIn) -> Response:
    assert credential.authorization_endpoint is not None
    source, _ = split_vault_reference(credential.vault)
    context = {
        "server": server,
        "source": source,
        "username": signed.user.username,
        "authorization_host": urlsplit(credential.authorization_endpoint).netloc,
        "continue_url": app.path(f"{CONNECT_PATH}/{server}"),
    }
    return render("connect.html", context)


# -- GET /connect/callback -----------------------------------------------------------------------------------------


async def callback(request: Request) -> Response:
    """GET {issuer}/connect/callback: the upstream's authorization response (RFC 6749 §4.1.2, §4.1.2.1)."""
    app = tenant_of(request)
    signed = await signed_in(app, request)
    return keep_cookie(app, await _callback(app, request, signed), signed)


async def _callback(app: Tenant, request: Request, signed: SignedIn | None) -> Response:
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    params = dict(pairs)
    user_id = signed.user.id if signed is not None else None
    if len(params) != len(pairs):  # RFC 6749 §3.1: no parameter more than once
        return _refuse(app, request, user_id, None, "a parameter was sent more than once", 400)
    flow = StateSealer(app.master_key, app.id).open(params.get("state", ""))
    if flow is None or flow.tenant != app.id:
        return _refuse(app, request, user_id, None, "the state is missing or not one of this tenant's", 400)
    if time.time() > flow.expires_at:
        return _refuse(app, request, user_id, flow, "the state has expired", 400)
    if signed is None:
        return _refuse(app, request, None, flow, "no signed-in user", 403)
    if signed.user.id != flow.user_id or not hmac.compare_digest(_digest(signed.session_id), flow.session):
        # Another user's or another session's flow: whoever sent this browser here cannot store a grant in it.
        return _refuse(app, request, user_id, flow, "the state belongs to another user or session", 403)
    browser = app.cookies.read(request, FLOW_COOKIE + flow.server)
    if not browser or not hmac.compare_digest(_digest(browser), flow.browser):
        return _refuse(app, request, user_id, flow, "the flow cookie is missing or another flow's", 403)
    if not _finished.claim(flow):
        return _refuse(app, request, user_id, flow, "the state was used before", 400)
    response = await _finish(app, request, signed, flow, params)
    app.cookies.write(response, FLOW_COOKIE + flow.server, "", max_age=0)  # the flow is over, however it ended
    return response


async def _finish(app: Tenant, request: Request, signed: SignedIn, flow: Flow, params: dict[str, str]) -> Response:
    server, user = flow.server, signed.user
    found = _connectable(app, server)  # the configuration may have changed since the flow began
    if isinstance(found, Response):
        return found
    credential = found
    if app.policy.access(user.roles, server) is None:
        _record(app, request, user.id, "denied", server, "the user's roles do not include this server")
        return message_page("Not permitted", f"Your roles do not include the MCP server '{server}'.", status_code=403)
    source, name = split_vault_reference(credential.vault)
    host = urlsplit(credential.authorization_endpoint or "").netloc
    # RFC 9207 §2.4: the response must come from the server the request went to (error responses included).
    if credential.issuer is not None and params.get("iss") != credential.issuer:
        _record(app, request, user.id, "denied", server, "the response's iss is not the upstream's issuer")
        return _not_connected(source, f"The answer did not come from {host} (RFC 9207 issuer check).", 400)
    error = params.get("error")
    if error is not None:
        # RFC 6749 §4.1.2.1: the user denied, or the request was refused. Nothing is stored.
        code = error if _PLAIN_ERROR_CODE.fullmatch(error) else "unknown"
        _record(app, request, user.id, "failure", server, f"the upstream answered {code}")
        why = "you did not grant access" if code == "access_denied" else f"it answered '{code}'"
        return _not_connected(source, f"{host} did not authorize the connection: {why}.", 403)
    code_value = params.get("code")
    if not code_value:
        _record(app, request, user.id, "failure", server, "the upstream answered without a code")
        return _not_connected(source, f"{host} answered without an authorization code.", 400)
    refresh_token = await _exchange(app, request, user, flow, credential, code_value)
    if isinstance(refresh_token, Response):
        return refresh_token
    return await _store(app, request, user, server, credential, SecretRef(app.id, source, name), refresh_token)


async def _exchange(
    app: Tenant, request: Request, user: User, flow: Flow, credential: RefreshTokenCredential, code: str
) -> str | Response:
    """RFC 6749 §4.1.3 with the PKCE verifier (RFC 7636 §4.5), through the gateway's own token endpoint client:
    the same client authentication, vault reads and audit as the refreshes that follow."""
    server = flow.server
    source, _ = split_vault_reference(credential.vault)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": callback_url(app),
        "code_verifier": flow.verifier,
    }
    if credential.resource is not None:
        form["resource"] = credential.resource  # RFC 8707 §2.2
    endpoint = token_endpoint_for(
        credential,
        vault=VaultAccess(app.vault, app.id, server, app.leak_guard),
        on_use=app.audit.credential_use(app.id, server),
    )
    request_id = current_request_id.set(request_id_of(request.scope))  # vault reads are recorded with it
    try:
        answer, _ = await endpoint.request(form, _principal(app, user))
    except TokenRequestRefused as refused:
        # invalid_grant: the code was used, expired, or issued for another PKCE challenge (an injected code).
        _record(app, request, user.id, "failure", server, f"the token endpoint refused the code: {refused.error}")
        return _not_connected(
            source, f"The authorization could not be completed ({refused.error}). Start again.", status_code=502
        )
    except CredentialProblem:
        _record(app, request, user.id, "error", server, "the gateway's client credential is not usable")
        return _not_connected(
            source, "The gateway's own credential for this source is not usable: tell an administrator.", 502
        )
    except UpstreamError:
        _record(app, request, user.id, "error", server, "the token endpoint could not be used")
        return _not_connected(source, "The source's authorization server could not be reached. Try again.", 502)
    except AuditUnavailable:
        return _audit_unavailable()
    finally:
        current_request_id.reset(request_id)
        await endpoint.aclose()
    refresh_token = answer.get("refresh_token")
    if not isinstance(refresh_token, str) or not _VSCHAR.fullmatch(refresh_token):
        # Without a refresh token the gateway could use the grant for minutes only (RFC 6749 §1.5, §5.1).
        _record(app, request, user.id, "failure", server, "the token endpoint issued no refresh token")
        return _not_connected(
            source,
            "The source granted no long-lived access (no refresh token came back). An administrator must ask for "
            "offline access in the server's credential (for many providers the scope 'offline_access').",
            502,
        )
    return refresh_token


async def _store(
    app: Tenant,
    request: Request,
    user: User,
    server: str,
    credential: RefreshTokenCredential,
    configured: SecretRef,
    refresh_token: str,
) -> Response:
    """The user's per-user secret: a new version when one exists (which also makes an unhealthy credential
    healthy again), bound to this server (and the servers it was bound to), belonging to this user only."""
    ref = SecretRef(app.id, configured.source, per_user_secret_name(configured.name, user.id))
    try:
        existing = await app.vault.record(ref)
        if existing is not None and existing.user_id != user.id:
            # Stored by an administrator for someone else (or shared): not the user's to replace.
            logger.warning("connect: %s is not %s's own credential; nothing stored", ref, user.id)
            _record(app, request, user.id, "denied", server, "the credential's name holds another owner's credential")
            return _not_connected(
                ref.source,
                "A credential of someone else is filed under your name for this source. Tell an administrator.",
                409,
            )
        event = AuditEvent(
            action=Action.CONSENT_GIVEN,
            outcome="success",
            tenant=app.id,
            actor=Actor("user", user.id),
            target=str(ref),
            request_id=request_id_of(request.scope),
            details={
                "upstream": server,
                "via": "connect",
                "kind": str(CredentialKind.REFRESH_TOKEN),
                "value": "new version" if existing is not None else "first version",
                "scope": credential.scope,
            },
        )
        # A stored credential is recorded before it is stored, as a rotation is: durably when those are.
        log = app.audit.log
        if log.must_be_durable(Action.CREDENTIAL_ROTATED) or log.must_be_durable(Action.CONSENT_GIVEN):
            await log.record_durably(event)
        else:
            log.record(event)
        await app.vault.store(
            ref,
            refresh_token.encode("ascii"),
            kind=CredentialKind.REFRESH_TOKEN,
            owner=existing.owner if existing is not None and existing.owner else user.username,
            bindings=sorted({*(existing.bindings if existing is not None else ()), server}),
            user_id=user.id,
            max_age=existing.max_age if existing is not None else None,
            rotation=existing.rotation if existing is not None else None,
        )
    except AuditUnavailable:
        return _audit_unavailable()
    except VaultError as problem:
        logger.error("connect: could not store %s: %s", ref, problem)
        return _not_connected(ref.source, "The vault could not store the authorization. Try again later.", 503)
    logger.info("connect: user %s connected %s (tenant %s)", user.id, server, app.id)
    return message_page(
        "Connected",
        f"'{ref.source}' is connected with your own authorization. You can go back to your MCP client and use "
        f"'{server}'.",
        status_code=200,
        is_error=False,
    )


def _principal(app: Tenant, user: User) -> AccessTokenClaims:
    """Whom the exchange's vault reads are for: the signed-in user (no access token is involved)."""
    return AccessTokenClaims(
        subject=user.id,
        client_id=CONNECT_CLIENT,
        audience=(),
        scopes=frozenset(),
        expires_at=0,
        issued_at=0,
        jti="",
        grant_id=None,
        tenant=app.id,
        auth_time=None,
        roles=user.roles,
        raw={},
    )


def _not_connected(source: str, message: str, status_code: int) -> Response:
    return message_page(f"{source} is not connected", message + " Nothing was stored.", status_code=status_code)


def _audit_unavailable() -> Response:
    return message_page(
        "Try again later", "The audit log is unavailable, so nothing was stored. Try again later.", status_code=503
    )


def _refuse(
    app: Tenant, request: Request, user_id: str | None, flow: Flow | None, reason: str, status_code: int
) -> Response:
    """A callback that cannot be this user's: recorded (an attack shows in the audit log), and a page saying to
    start again from the MCP client's link."""
    _record(app, request, user_id, "denied", flow.server if flow is not None else None, reason)
    logger.info("connect: callback refused in tenant %s: %s", app.id, reason)
    message = (
        "This connection link is not valid here: it has expired, was already used, or was started by another "
        "sign-in. Start again from the link your MCP client showed."
    )
    return message_page("Cannot connect", message, status_code=status_code)


def _record(
    app: Tenant, request: Request, user_id: str | None, outcome: Outcome, server: str | None, reason: str
) -> None:
    app.audit.log.record(
        AuditEvent(
            action=Action.CONSENT_GIVEN,
            outcome=outcome,
            tenant=app.id,
            actor=Actor("user", user_id) if user_id else Actor("system", "anonymous"),
            target=f"upstream:{server}" if server else None,
            reason=reason,
            request_id=request_id_of(request.scope),
            details={"via": "connect"},
        )
    )


__all__ = ["callback", "callback_url", "connect", "return_path"]
