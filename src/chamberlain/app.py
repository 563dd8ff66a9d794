"""Builds the ASGI application: public OAuth and MCP surfaces, the login pages, and their shared state."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chamberlain.demo.server import DemoHandler
from chamberlain.gateway.asgi_upstream import AsgiUpstream
from chamberlain.gateway.protected_resource import METADATA_PREFIX, protected_resource_metadata
from chamberlain.gateway.proxy import McpProxy
from chamberlain.net.ssrf import Resolver
from chamberlain.oauth import authorize, introspection, metadata, registration, revocation, token
from chamberlain.settings import Settings
from chamberlain.state import AppState, open_state
from chamberlain.web import login
from chamberlain.web.pages import STATIC_DIR
from chamberlain.web.request_id import RequestIdMiddleware

logger = logging.getLogger(__name__)


def create_app(settings: Settings, *, resolver: Resolver | None = None) -> Starlette:
    demo = DemoHandler()

    @contextlib.asynccontextmanager
    async def lifespan(application: Starlette) -> AsyncIterator[None]:
        state = await open_state(settings, AsgiUpstream(demo), resolver=resolver)
        application.state.chamberlain = state
        try:
            async with demo.running():
                yield
        finally:
            await state.close()

    routes = [
        Route("/.well-known/oauth-authorization-server", metadata.oauth_authorization_server, methods=["GET"]),
        Route("/.well-known/openid-configuration", metadata.oauth_authorization_server, methods=["GET"]),
        Route(METADATA_PREFIX + "/mcp/{server}", protected_resource_metadata, methods=["GET"]),
        Route("/jwks.json", metadata.jwks, methods=["GET"]),
        Route("/authorize", authorize.authorize, methods=["GET"]),
        Route("/authorize", authorize.decide, methods=["POST"]),
        Route("/login", login.show_login, methods=["GET"]),
        Route("/login", login.submit_login, methods=["POST"]),
        Route("/login/password", login.submit_new_password, methods=["POST"]),
        Route("/login/done", login.signed_in_page, methods=["GET"]),
        Route("/token", token.token, methods=["POST"]),
        Route("/revoke", revocation.revoke, methods=["POST"]),
        Route("/introspect", introspection.introspect, methods=["POST"]),
        Route("/mcp/{server}", McpProxy(), methods=["GET", "POST", "DELETE"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if settings.registration.dynamic_registration:
        routes.append(Route("/register", registration.register, methods=["POST"]))
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected_error},
    )


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return JSONResponse({"error": "http_error", "error_description": detail}, status_code=status)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Never a stack trace to the client; the log has it for the operator.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "server_error", "error_description": "internal error"}, status_code=500)


__all__ = ["AppState", "create_app"]
