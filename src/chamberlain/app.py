"""Builds the ASGI application: public OAuth and MCP surfaces, the login pages, and their shared state."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from chamberlain.admin.api import create_admin_api
from chamberlain.admin.problems import problem_response
from chamberlain.console.routes import console_routes
from chamberlain.demo.server import DemoHandler
from chamberlain.gateway import jsonrpc
from chamberlain.gateway.asgi_upstream import AsgiUpstream
from chamberlain.gateway.protected_resource import METADATA_PREFIX, protected_resource_metadata
from chamberlain.gateway.proxy import McpProxy
from chamberlain.llm import errors as llm_errors
from chamberlain.llm.proxy import COUNT_TOKENS_PATH, MESSAGES_PATH, MessagesEndpoint, llm_resource_metadata
from chamberlain.net.ssrf import Resolver
from chamberlain.oauth import authorize, introspection, metadata, registration, revocation, token
from chamberlain.oauth.errors import TEMPORARILY_UNAVAILABLE, OAuthError
from chamberlain.observability.metrics import Metrics, MetricsMiddleware
from chamberlain.observability.readiness import Readiness, drain_on_sigterm, readyz
from chamberlain.scim.app import SCIM_PATH, create_scim_app
from chamberlain.settings import Settings
from chamberlain.state import AppState, open_state
from chamberlain.store.errors import RETRY_AFTER_SECONDS, store_unavailable
from chamberlain.telemetry.otlp import OtlpMetricsEndpoint
from chamberlain.tenancy.tenant import TENANT_PATH_PREFIX
from chamberlain.web import login, sso
from chamberlain.web.pages import STATIC_DIR, message_page
from chamberlain.web.request_id import RequestIdMiddleware

logger = logging.getLogger(__name__)
TENANT_PATH = TENANT_PATH_PREFIX + "{tenant}"
ADMIN_API_PATH = "/admin/api"  # a tenant's admin API is its issuer + this (Tenant.admin_resource)
_ADMIN_API = re.compile(rf"(?:{re.escape(TENANT_PATH_PREFIX)}[^/]*)?{ADMIN_API_PATH}(?:/|$)", re.DOTALL)


def create_app(settings: Settings, *, resolver: Resolver | None = None) -> Starlette:
    demo = DemoHandler()
    metrics = Metrics(settings.metrics, settings.tenant)  # /metrics, and the middleware that counts requests

    @contextlib.asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[dict[str, AppState | Readiness]]:
        state = await open_state(settings, AsgiUpstream(demo), resolver=resolver)
        application.state.chamberlain = state
        if settings.metrics.enabled:
            state.events.subscribe(metrics.gateway_decision)  # decisions counted off the request path
        readiness = Readiness(state.database, settings.redis_url)
        restore_sigterm = drain_on_sigterm(readiness, settings.shutdown_drain_seconds)  # /readyz 503 from SIGTERM
        try:
            async with demo.running():
                # Lifespan state: every request's scope carries it, mounted sub-applications' included.
                yield {"chamberlain": state, "readiness": readiness}
        finally:
            # Shutdown: in-flight requests have finished (uvicorn waited for them); what is queued is written now.
            readiness.draining = True
            restore_sigterm()
            await readiness.aclose()
            await state.close()

    tenant_surface = _tenant_routes(settings)
    # The admin surface (Ory Hydra style: apart from the public one), per tenant like everything else.
    admin_api = Mount(ADMIN_API_PATH, app=create_admin_api())
    well_known = [
        # RFC 8414 §3.1: a path issuer's metadata has the well-known segment inserted before the path; RFC 9728
        # §3.1 likewise for a resource.
        Route(f"/.well-known/{name}{tenant}", metadata.oauth_authorization_server, methods=["GET"])
        for name in ("oauth-authorization-server", "openid-configuration")
        for tenant in ("", TENANT_PATH)
    ] + [
        Route(f"{METADATA_PREFIX}{tenant}{resource}", endpoint, methods=["GET"])
        for resource, endpoint in (("/mcp/{server}", protected_resource_metadata), ("/llm", llm_resource_metadata))
        for tenant in ("", TENANT_PATH)
    ]
    routes = [
        *well_known,
        *tenant_surface,
        admin_api,
        Mount(TENANT_PATH, routes=[*tenant_surface, admin_api, _APPENDED_OPENID_CONFIGURATION]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),  # readiness (observability/readiness.py)
        Route("/metrics", metrics.endpoint, methods=["GET"]),  # Prometheus (observability/metrics.py)
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(RequestIdMiddleware)]
    if settings.metrics.enabled:  # off: nothing is counted, and the request path pays nothing for it
        middleware.insert(0, Middleware(MetricsMiddleware, metrics=metrics))  # outermost: it times everything
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _http_error,
            **dict.fromkeys(_STORE_ERRORS, _store_error),
            Exception: _unexpected_error,
        },
    )


# OpenID Connect Discovery §4 appends the well-known path to a path issuer; some clients try only that.
_APPENDED_OPENID_CONFIGURATION = Route(
    "/.well-known/openid-configuration", metadata.oauth_authorization_server, methods=["GET"]
)


def _tenant_routes(settings: Settings) -> list[BaseRoute]:
    """One tenant's public surface: at the root for the default tenant, under /t/{tenant} for the others."""
    from chamberlain.web import connect  # users connect their own upstream grants (issue 6)

    routes = [
        Route("/jwks.json", metadata.jwks, methods=["GET"]),
        Route("/authorize", authorize.authorize, methods=["GET"]),
        Route("/authorize", authorize.decide, methods=["POST"]),
        Route("/login", login.show_login, methods=["GET"]),
        Route("/login", login.submit_login, methods=["POST"]),
        Route("/login/password", login.submit_new_password, methods=["POST"]),
        Route("/login/done", login.signed_in_page, methods=["GET"]),
        # Single sign-on through the tenant's identity providers (web/sso.py).
        Route("/login/sso", sso.discover, methods=["POST"]),
        Route("/login/step-up", sso.submit_step_up, methods=["POST"]),
        Route("/sso/{name}/start", sso.start, methods=["GET"]),
        Route("/sso/{name}/callback", sso.oidc_callback, methods=["GET"]),
        Route("/sso/{name}/acs", sso.saml_acs, methods=["POST"]),
        Route("/sso/{name}/metadata", sso.saml_metadata, methods=["GET"]),
        # The callback before the {server} pattern, which would take it (a server named "callback" cannot connect).
        Route("/connect/callback", connect.callback, methods=["GET"]),
        Route("/connect/{server}", connect.connect, methods=["GET"]),
        Route("/token", token.token, methods=["POST"]),
        Route("/revoke", revocation.revoke, methods=["POST"]),
        Route("/introspect", introspection.introspect, methods=["POST"]),
        Route("/mcp/{server}", McpProxy(), methods=["GET", "POST", "DELETE"]),
        # The LLM API, where Claude Code's ANTHROPIC_BASE_URL (the tenant's issuer) sends the Messages API.
        Route(MESSAGES_PATH, MessagesEndpoint(MESSAGES_PATH, metered=True), methods=["POST"]),
        Route(COUNT_TOKENS_PATH, MessagesEndpoint(COUNT_TOKENS_PATH, metered=False), methods=["POST"]),
        # Claude Code's own metrics (OTEL_EXPORTER_OTLP_ENDPOINT = the issuer), for traffic that bypasses the proxy.
        Route("/v1/metrics", OtlpMetricsEndpoint(), methods=["POST"]),
        # SCIM 2.0 provisioning (RFC 7644 §3.2): {issuer}/scim/v2, authenticated by the tenant's SCIM bearer token.
        Mount(SCIM_PATH, app=create_scim_app()),
        # The admin console (console/): server-rendered pages on the browser session, {issuer}/console.
        *console_routes(),
    ]
    if settings.registration.dynamic_registration:
        routes.append(Route("/register", registration.register, methods=["POST"]))
    return routes


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    if _ADMIN_API.match(request.scope["path"]):
        # A path under an admin API that its mount did not take (Starlette's path patterns stop at a newline, and
        # a crafted id may hold one): still the admin API's error format, RFC 9457.
        return problem_response(status, "there is no such resource here" if status == 404 else None)
    return JSONResponse({"error": "http_error", "error_description": detail}, status_code=status)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    if store_unavailable(exc):
        return _store_outage(request, exc)
    # Never a stack trace to the client; the log has it for the operator.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "server_error", "error_description": "internal error"}, status_code=500)


async def _store_error(request: Request, exc: Exception) -> Response:
    """The store's and the network's exception types: a store outage is answered here (503, no traceback in the
    log for every request it fails); anything else goes on to `_unexpected_error`."""
    if not store_unavailable(exc):
        raise exc
    return _store_outage(request, exc)


# The exception types a store outage arrives as (store/errors.py); each is checked by store_unavailable.
_STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, OSError, sqlite3.Error)
_TENANT = rf"(?:{re.escape(TENANT_PATH_PREFIX)}[^/]+)?"
_PAGES = re.compile(rf"{_TENANT}/(?:authorize|login|sso|connect|console)(?:/|$)")
_MCP = re.compile(rf"{_TENANT}/mcp/")
_LLM = re.compile(rf"{_TENANT}/v1/messages")


def _store_outage(request: Request, exc: Exception) -> Response:
    """A request that needed the store while it is unreachable: 503 with Retry-After in its surface's own format,
    never a 500; it recovers by itself when the store returns (the pool reconnects)."""
    # Debug only: the outage itself is logged once by the state refresher, not once per request it fails.
    logger.debug("store unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    path = request.scope["path"]
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if _MCP.match(path):  # JSON-RPC error; the id cannot be read back from a consumed body, so null (§5)
        return Response(jsonrpc.store_unavailable_body(), 503, headers=retry, media_type="application/json")
    if _LLM.match(path):  # Anthropic's format (llm/errors.py)
        headers = {**retry, "x-should-retry": "true"}
        return Response(llm_errors.store_unavailable_body(), 503, headers=headers, media_type="application/json")
    if _PAGES.match(path):  # people: a page, not JSON
        page = message_page(
            "Temporarily unavailable", "Chamberlain cannot reach its database. Try again shortly.", status_code=503
        )
        page.headers.update(retry)
        return page
    if _ADMIN_API.match(path):
        return problem_response(503, "the store is temporarily unavailable", kind="unavailable", headers=retry)
    # OAuth endpoints (RFC 6749 §4.1.2.1's temporarily_unavailable) and everything else: OAuth-style JSON.
    unavailable = OAuthError(TEMPORARILY_UNAVAILABLE, "the store is temporarily unavailable", status_code=503)
    unavailable.headers.update(retry)
    return unavailable.to_response()


__all__ = ["AppState", "create_app"]
