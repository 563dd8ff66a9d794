"""Who may see the console, and how its pages are answered: the browser session, the role check on every request,
CSRF on every POST, the flash message after a POST, and the headers every console page carries.

- Authentication: the tenant's browser session cookie (sessions/browser.py). Without one, the page answers 303 to
  the tenant's login page with `return_to` = the console path, so signing in leads back here.
- Authorisation, on every request from the user's current roles (never the session's copy): administrative
  functions → everything; `audit_access: read` alone → the read-only pages (Overview, Audit, Cost), no forms, and
  every POST 403; anyone else → a 403 page on every console URL.
- CSRF (OWASP synchronizer token): the hidden `csrf_token` is the admin API's session-bound token
  (admin/auth.py `csrf_token`), so one session's token is worthless in another; a POST whose Origin (or, without
  one, Sec-Fetch-Site) is not this gateway's is refused before anything else.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from chamberlain.admin.auth import SAFE_METHODS, Administrator, csrf_token
from chamberlain.admin.problems import ProblemError
from chamberlain.net import hosts
from chamberlain.sessions.browser import COOKIE, SignedIn, keep_cookie, signed_in
from chamberlain.tenancy.routing import tenant_of
from chamberlain.tenancy.tenant import Tenant

CONSOLE_PATH = "/console"
Access = Literal["admin", "read"]  # "read": also open to `audit_access: read`
Handler = Callable[[Request, "Viewer"], Awaitable[Response]]

_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)
_environment.filters["isotime"] = lambda timestamp: datetime.fromtimestamp(timestamp, UTC).isoformat()
_environment.filters["shorttime"] = lambda timestamp: f"{datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M} UTC"

# No inline script or style anywhere, so no 'unsafe-inline'; data: images for nothing but the CSS's own icons.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

# Flash messages after a POST (PRG): the redirect names one by its key, so no text from a request is ever shown.
FLASHES = {
    "session-revoked": "The session was revoked.",
    "signed-out": "The user was signed out everywhere: sessions ended, grants revoked, consents withdrawn.",
    "consent-revoked": "The consent was revoked, with the grants it allowed.",
    "roles-saved": "The role document was saved.",
    "chain-verified": "The audit chain was verified.",
}

# (path under the console, label, access); the navigation shows the pages the viewer may see.
PAGES: tuple[tuple[str, str, Access], ...] = (
    ("", "Overview", "read"),
    ("/users", "Users", "admin"),
    ("/groups", "Groups", "admin"),
    ("/clients", "OAuth clients", "admin"),
    ("/servers", "MCP servers", "admin"),
    ("/roles", "Roles", "admin"),
    ("/audit", "Audit log", "read"),
    ("/cost", "Cost", "read"),
    ("/vault", "Vault", "admin"),
    ("/dlp", "Data protection", "admin"),
)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person using the console, and what their roles let them do here."""

    tenant: Tenant
    session: SignedIn
    administrative: bool
    request: Request

    @property
    def administrator(self) -> Administrator:
        """The caller as the admin API's shared functions (admin/common.py record_change, ...) know it."""
        return Administrator(self.tenant, self.session.user, "session", None, self.session.session_id, self.session)

    def url(self, path: str = "") -> str:
        return self.tenant.path(CONSOLE_PATH + path)

    def csrf_token(self) -> str:
        return csrf_token(self.tenant, self.session.session_id)

    def render(self, template: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
        flash = FLASHES.get(self.request.query_params.get("done", ""))
        base = {
            "viewer": self.session.user,
            "console": self.url(),
            "nav": [
                (self.url(path), label) for path, label, access in PAGES if self.administrative or access == "read"
            ],
            "current": self.request.url.path,
            "administrative": self.administrative,
            "csrf_token": self.csrf_token() if self.administrative else "",
            "flash": flash,
            "tenant": self.tenant.id,
        }
        response = html(template, {**base, **context}, status_code=status_code)
        return keep_cookie(self.tenant, response, self.session)

    def done(self, path: str, flash: str) -> Response:
        """POST → 303 back to the page (PRG), naming the flash message to show."""
        assert flash in FLASHES
        response = RedirectResponse(f"{self.url(quote(path, safe='/'))}?{urlencode({'done': flash})}", status_code=303)
        response.headers.update(HEADERS)
        return keep_cookie(self.tenant, response, self.session)


def html(template: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_environment.get_template(template).render(**context), status_code, headers=HEADERS)


def render_fragment(template: str, context: dict[str, Any]) -> str:
    return _environment.get_template(template).render(**context)


def error_page(status_code: int, heading: str, message: str) -> HTMLResponse:
    return html("error.html", {"heading": heading, "message": message}, status_code=status_code)


def not_found() -> HTTPException:
    """Another tenant's objects, and ids that name nothing, are simply not here."""
    return HTTPException(404, "There is no such page or object in this console.")


def page(handler: Handler, access: Access = "admin") -> Callable[[Request], Awaitable[Response]]:
    """Wraps a console endpoint: sign-in, the role check, CSRF for POSTs, and errors as console pages (never a
    stack trace or the JSON error of the API)."""

    async def endpoint(request: Request) -> Response:
        try:
            tenant = tenant_of(request)
        except HTTPException:
            return error_page(404, "Not found", "There is no such tenant here.")
        unsafe = request.method not in SAFE_METHODS
        presented = tenant.cookies.read(request, COOKIE)
        if unsafe and not _same_origin(tenant, request):
            return error_page(403, "Forbidden", "Changes are accepted from this console's own pages only.")
        session = await signed_in(tenant, request)
        if session is None:
            if unsafe:
                return error_page(403, "Forbidden", "Your session has ended; sign in again.")
            return _to_login(tenant, request)
        profile = tenant.policy.profile(session.user.roles)
        allowed = profile.administrative or (profile.audit_read and access == "read" and not unsafe)
        if not allowed:
            return keep_cookie(tenant, _forbidden(), session)
        viewer = Viewer(tenant, session, profile.administrative, request)
        try:
            if unsafe and not _csrf_valid(await request.form(), csrf_token(tenant, presented or "")):
                expired = error_page(403, "Forbidden", "This form has expired; reload the page.")
                return keep_cookie(tenant, expired, session)
            return await handler(request, viewer)
        except HTTPException as problem:
            status = problem.status_code
            shown = error_page(status, _HEADINGS.get(status, "Error"), str(problem.detail))
            return keep_cookie(tenant, shown, session)
        except ProblemError as problem:  # raised by the admin API's shared functions (the audit log unavailable)
            refused = error_page(problem.status, _HEADINGS.get(problem.status, "Refused"), problem.detail)
            return keep_cookie(tenant, refused, session)

    return endpoint


def _csrf_valid(form: FormData, expected: str) -> bool:
    """The form's token against the one of the session id the browser presented (a rotation on this request
    changes the id, and the page was rendered with the old one)."""
    submitted = form.get("csrf_token")
    return isinstance(submitted, str) and hmac.compare_digest(expected.encode(), submitted.encode())


_HEADINGS = {400: "Bad request", 403: "Forbidden", 404: "Not found", 409: "Refused", 503: "Unavailable"}


def _forbidden() -> HTMLResponse:
    return error_page(403, "Forbidden", "Your roles do not give you access to the admin console.")


def _to_login(tenant: Tenant, request: Request) -> Response:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(tenant.path("/login") + "?return_to=" + quote(path, safe="/"), status_code=303)
    response.headers.update(HEADERS)
    return response


def _same_origin(tenant: Tenant, request: Request) -> bool:
    """The Origin header (Fetch: sent on every POST by current browsers), else Sec-Fetch-Site. Under this page's
    Referrer-Policy no-referrer a browser sends `Origin: null` on a form POST (Fetch §3.1, "append a request Origin
    header"), and so does a sandboxed page of any site: then Sec-Fetch-Site must say same-origin. A request with
    neither header comes from no browser page, and still needs the session-bound token."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin == "null":
        return site == "same-origin"
    if origin is not None:
        return origin == hosts.origin(tenant.issuer)
    return site is None or site in ("same-origin", "none")
