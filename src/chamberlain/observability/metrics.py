"""Prometheus metrics (`/metrics`, the text exposition format): HTTP requests, latency, gateway decisions, tokens.

What is measured, and its labels (chosen so that no label can take values a caller invents: a series per value
would let anyone grow the exposition, and Prometheus, without bound):
- `chamberlain_http_requests_total{method, route, status, tenant}` and
  `chamberlain_http_request_duration_seconds{method, route}`: every HTTP request, by route *template*
  (`/t/{tenant}/mcp/{server}`, never the raw path), method (others than the usual seven as "OTHER"), status, and
  tenant (a tenant id this replica serves; "unknown" for a /t/ID naming none, so made-up ids add no series). The
  latency is the time to the response's start (its status line): a streamed answer (SSE) can last minutes, and
  what a client waits for, and what an SLO measures, is the start.
- `chamberlain_tokens_issued_total{tenant}`: successful token endpoint answers. RFC 6749 §5.1: the token endpoint
  answers 200 exactly when it issues an access token (§5.2: every error is 400 or 401), whatever the grant.
- `chamberlain_gateway_decisions_total{tenant, server, decision}`: the MCP gateway's decisions (allowed, denied,
  upstream_error, one per JSON-RPC message), read from the EventBus off the request path as the audit log reads
  it; upstream errors are `decision="upstream_error"`. `server` is a configured server's name (events are only
  emitted for servers that exist), never the JSON-RPC method or tool, which callers choose.
No label carries a user id, client id, token, IP address or tenant name (tenant *ids* are operators' identifiers).

Each app has its own CollectorRegistry (several apps run in one test process; and nothing global such as the
process collector's /proc reads runs on a scrape). The request path pays a dictionary lookup for the label set's
child and prometheus_client's own per-value lock; the children are kept per label set, since `.labels()` costs
several times the increment.
"""

from __future__ import annotations

import hmac
import time
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chamberlain.gateway.events import GatewayEvent
from chamberlain.observability.settings import MetricsSettings
from chamberlain.tenancy.tenant import TENANT_PATH_PREFIX

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_TENANT_PATH: Final = TENANT_PATH_PREFIX + "{tenant}"
_TOKEN_ROUTES: Final = frozenset({"/token", _TENANT_PATH + "/token"})
UNMATCHED: Final = "unmatched"  # the route label of a request no route took (a 404 of the router itself)
UNKNOWN_TENANT: Final = "unknown"
# Seconds. A proxied MCP call costs the gateway about a millisecond; upstreams and the LLM API take up to seconds.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """One application's metrics and their registry."""

    def __init__(self, settings: MetricsSettings, default_tenant: str) -> None:
        self.settings = settings
        self.default_tenant = default_tenant
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "chamberlain_http_requests",
            "HTTP requests by route template, method, status and tenant.",
            ("method", "route", "status", "tenant"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "chamberlain_http_request_duration_seconds",
            "Time from a request's arrival to its response's start, by route template and method.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "chamberlain_tokens_issued",
            "Access tokens issued by the token endpoint (any grant), by tenant.",
            ("tenant",),
            registry=self.registry,
        )
        self.decisions = Counter(
            "chamberlain_gateway_decisions",
            "MCP gateway decisions (allowed, denied, upstream_error) by tenant and server.",
            ("tenant", "server", "decision"),
            registry=self.registry,
        )
        # Label set -> (requests child, latency child, tokens child or None): `.labels()` once per label set.
        self._children: dict[tuple[str, str, int, str], tuple[Counter, Histogram, Counter | None]] = {}

    # -- the request path ------------------------------------------------------------------------------------------

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"]
        if method not in _METHODS:
            method = "OTHER"
        route = route_template(scope)
        key = (method, route, status, self._tenant(scope))
        children = self._children.get(key)
        if children is None:
            tenant = key[3]
            issued = self.tokens.labels(tenant) if status == 200 and route in _TOKEN_ROUTES else None
            children = (
                self.requests.labels(method, route, str(status), tenant),
                self.latency.labels(method, route),
                issued,
            )
            self._children[key] = children
        requests, latency, issued = children
        requests.inc()
        latency.observe(seconds)
        if issued is not None:
            issued.inc()

    def _tenant(self, scope: Scope) -> str:
        tenant = scope.get("path_params", {}).get("tenant")
        if tenant is None:
            return self.default_tenant  # the root's routes are the default tenant's surface
        state = scope.get("state", {}).get("chamberlain")
        return tenant if state is not None and state.tenant(tenant) is not None else UNKNOWN_TENANT

    # -- off the request path --------------------------------------------------------------------------------------

    def gateway_decision(self, event: GatewayEvent) -> None:
        """EventBus subscriber (gateway/events.py): called by the bus's delivery task, not by the request."""
        self.decisions.labels(event.tenant, event.server, event.decision).inc()

    # -- the endpoint ----------------------------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics: 404 unless enabled; 401 without the configured bearer token (RFC 6750 §3)."""
        if not self.settings.enabled:
            return JSONResponse({"error": "not_found", "error_description": "metrics are not enabled"}, 404)
        expected = self.settings.bearer_token
        if expected is not None and not _bearer_matches(request, expected.get_secret_value()):
            return JSONResponse(
                {"error": "invalid_token", "error_description": "a valid bearer token is required"},
                401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: Request, expected: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # RFC 7235 §2.1: the scheme is case-insensitive. compare_digest: the time taken says nothing of the token.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def route_template(scope: Scope) -> str:
    """The route pattern the router matched, mounts included (`/t/{tenant}/admin/api/users/{user_id}`).

    Starlette's routers record the innermost matched route in scope["route"] and each mount appends the path it
    matched to scope["root_path"]; the mounted part of that path is templated again from the path parameters (the
    only mount with parameters is the tenant's).
    """
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    mounted: str = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
    tenant = scope.get("path_params", {}).get("tenant")
    if mounted and tenant is not None and mounted.startswith(TENANT_PATH_PREFIX + tenant):
        mounted = _TENANT_PATH + mounted[len(TENANT_PATH_PREFIX) + len(tenant) :]
    if isinstance(route, Mount):  # nothing matched inside it: the mount's own path is already in root_path
        return mounted or route.path
    path: str = getattr(route, "path", "")
    return mounted + path


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no request or response objects on the hot path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = False

        async def send_observed(message: Message) -> None:
            nonlocal observed
            if not observed and message["type"] == "http.response.start":
                observed = True
                self._metrics.observe_request(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self._app(scope, receive, send_observed)
        except Exception:
            # Raised before any response: the server error middleware outside answers 500 for it.
            if not observed:
                self._metrics.observe_request(scope, 500, time.perf_counter() - started)
            raise
