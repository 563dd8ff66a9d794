"""{tenant}/v1/messages and {tenant}/v1/messages/count_tokens: the Messages API through the tenant's policy.

Claude Code points ANTHROPIC_BASE_URL at the tenant's issuer and sends the Messages API as it would to Anthropic. Order
of checks, each stopping the request with an Anthropic-format error (llm/errors.py):
  credential (401: an access token for {issuer}/llm, or a virtual key) -> body size (413) and shape (400) ->
  routing (`llm.routes` may rewrite the model; recorded) -> the caller's roles permit the model served (403) ->
  request and token rate limits (429, retry-after) -> an API key for the caller's team (403) -> a price for the
  model (400) -> the budgets' reservation (cost/budgets.py: 400 spent, 429 held by requests in flight) -> the key's
  value from the vault -> upstream. count_tokens is free: no token limits, prices, budgets or records.
The client's credential never goes upstream: the upstream gets the tenant's API key (x-api-key). The body goes as
sent (but for a routed model), with `anthropic-version` and `anthropic-beta`; the query (`?beta=true`) too.

The answer is relayed as it comes: a complete body, or Server-Sent Events passed on as soon as they are whole (never
half an event), each one fed to the request's UsageMeter. Upstream errors (429, 529 overloaded, 5xx) keep their
status, body and retry-after. A client that disconnects cancels the exchange: the upstream connection is closed,
which is how the Messages API learns to stop generating. After the answer, the request's usage is priced and handed
to the usage recorder (queued, written in batches) and the budget reservation settled with the actual cost; a
response cut off (by the client or the upstream) is recorded with what was seen of it and `complete=False`.

Per request the hot path costs a cached token check, one JSON parse of the body, dictionary lookups for routes,
policy and the API key, the rate limiter's (and the budget guard's) single round trip or memory check, and one
write and read on a pooled upstream connection (net/http1.py). Nothing waits on the database.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from chamberlain.audit.events import Action, AuditEvent, Outcome
from chamberlain.audit.log import AuditUnavailable
from chamberlain.cost.budgets import BudgetExceeded, Reservation
from chamberlain.cost.pricing import Pricing, PricingError
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.teams import team_of
from chamberlain.cost.usage import UsageMeter
from chamberlain.dlp.messages import guard_outgoing
from chamberlain.gateway.protected_resource import METADATA_PREFIX
from chamberlain.gateway.upstream import UpstreamError
from chamberlain.gateway.upstream_credentials import actor_of, current_request_id, user_id_of
from chamberlain.llm.errors import ErrorType, LlmError, error_body, error_event, error_type_for
from chamberlain.llm.messages import MessagesRequest, parse_request, with_model
from chamberlain.llm.virtual_keys import PREFIX as VIRTUAL_KEY_PREFIX
from chamberlain.net.http1 import BodyTooLarge, ConnectFailed, Http1Error, Http1Response, ResponseTimeout
from chamberlain.oauth.access_tokens import AccessTokenClaims, InvalidAccessToken
from chamberlain.tenancy.routing import tenant_for_scope, tenant_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.transport.tls import client_certificate_thumbprint
from chamberlain.web.request_id import request_id_of

logger = logging.getLogger(__name__)

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# Client headers that belong to the Messages API and go upstream; Authorization, x-api-key, cookies and forwarding
# headers stay here. No accept-encoding: the proxy reads the answer (usage) and relays it as it comes.
_FORWARDED = frozenset({b"content-type", b"accept", b"anthropic-version", b"anthropic-beta"})
# Upstream response headers relayed to the client (request-id names the exchange for Anthropic's support).
_RELAYED = frozenset({b"content-type", b"request-id", b"retry-after", b"x-should-retry", b"cache-control"})
_JSON_TYPE = (b"content-type", b"application/json")
_SSE_TYPE = b"text/event-stream"
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")  # WHATWG HTML §9.2.6: an empty line ends an event
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_EVENT_BYTES = 16 * 1024 * 1024


class MessagesEndpoint:
    """The ASGI endpoint for one of the two paths; `metered`: the Messages call itself (priced, budgeted)."""

    def __init__(self, path: str, *, metered: bool) -> None:
        self._path = path
        self._metered = metered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange(scope, receive, send, self._path, self._metered)
        try:
            await exchange.run()
        except LlmError as refused:
            await refused.send(send, exchange.request_id)
        except _ClientGone:
            pass  # left before its request was read: nobody to answer, nothing sent upstream


class _ClientGone(Exception):
    pass


class _Exchange:
    """One client request on its way through the proxy."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, path: str, metered: bool) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.path = path
        self.metered = metered
        self.request_id = request_id_of(scope)
        self.forwarded: list[tuple[bytes, bytes]] = []
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.content_length: bytes | None = None
        for name, value in scope["headers"]:
            if name in _FORWARDED:
                self.forwarded.append((name, value))
            elif name == b"authorization":
                self.authorization = value
            elif name == b"x-api-key":
                self.api_key = value
            elif name == b"content-length":
                self.content_length = value
        self.finished = False  # the last byte of the answer is on its way: a disconnect now cancels nothing
        self.client_gone = False

    async def run(self) -> None:
        started, at = time.perf_counter(), datetime.now(UTC)
        tenant = tenant_for_scope(self.scope)
        if tenant is None:
            raise LlmError("not_found_error", "there is no such tenant here")
        principal = self._authenticate(tenant)
        llm = tenant.config.llm
        body = await self._read_body(llm.max_request_bytes)
        request = parse_request(body, needs_max_tokens=self.metered)
        routed = tenant.shared.llm.router(tenant).route(
            request.model, input_tokens=request.input_estimate, tools=request.tools, roles=principal.roles
        )
        model = routed.model
        profile = tenant.policy.profile(principal.roles)
        if not profile.permits_model(model):
            await self._audit(tenant, principal, "denied", request.model, model, "model not permitted by policy")
            raise LlmError("permission_error", f"your roles do not permit the model {model}")
        if routed.rule is not None:
            body = with_model(body, model)
            details = {"route": routed.rule}
            await self._audit(tenant, principal, "success", request.model, model, None, details)
        if tenant.dlp.enabled and tenant.dlp.config.llm_gate:
            body = await self._protected(tenant, principal, body, model)
        user = user_id_of(principal)
        await self._within_rate_limits(tenant, principal, user, request)
        team = team_of(principal.roles, llm.teams)
        key_name = (llm.team_keys.get(team) if team is not None else None) or llm.default_key
        reference = llm.keys.get(key_name) if key_name is not None else None
        if reference is None:
            raise LlmError("permission_error", "no model API key is configured for your team: ask an administrator")
        if not self.metered:
            await self._forward(tenant, principal, reference, body, None)
            return
        pricing = self._pricing(tenant)
        if not pricing.knows(model):
            raise LlmError("invalid_request_error", f"the model {model} has no price here: ask an administrator")
        reservation = await self._reserve(
            tenant, pricing, profile.monthly_budget_usd, user, principal.client_id, team, model, request
        )
        meter = UsageMeter()
        status = 0
        try:
            status = await self._forward(tenant, principal, reference, body, meter)
        finally:
            # Also when the upstream failed, the client left or a shutdown cut the stream: the reservation is given
            # back, and what was used is counted (a stream that began has a model: the upstream spent tokens on it).
            cost = Decimal(0)
            if 200 <= status < 300 or meter.model is not None:
                cost = self._record(tenant, pricing, principal, user, team, model, request, meter, started, at)
            await tenant.shared.budget_guard.settle(reservation, cost)

    # -- the checks -----------------------------------------------------------------------------------------------

    def _authenticate(self, tenant: Tenant) -> AccessTokenClaims:
        """Authorization: Bearer (what ANTHROPIC_AUTH_TOKEN sends) or x-api-key (what an apiKeyHelper's value and
        ANTHROPIC_API_KEY are sent as): an access token for this tenant's LLM resource, or a virtual key."""
        presented: str | None = None
        if self.authorization is not None:
            scheme, _, value = self.authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                raise _unauthenticated(tenant, "use Authorization: Bearer with an access token, or x-api-key")
            presented = value.strip()
        elif self.api_key is not None:
            presented = self.api_key.decode("latin-1").strip()
        if not presented:
            raise _unauthenticated(
                tenant, "an access token or API key is required (Authorization: Bearer, or x-api-key)"
            )
        try:
            return llm_principal(tenant, presented, certificate=client_certificate_thumbprint(self.scope))
        except InvalidAccessToken as invalid:
            raise _unauthenticated(tenant, invalid.reason) from None

    async def _read_body(self, limit: int) -> bytes:
        declared = self.content_length
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise LlmError("request_too_large", f"the request exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise LlmError("request_too_large", f"the request exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _within_rate_limits(
        self, tenant: Tenant, principal: AccessTokenClaims, user: str | None, request: MessagesRequest
    ) -> None:
        limiter = tenant.rate_limiter
        throttled = await limiter.admit(tenant.id, tenant.config, user=user, client=principal.client_id)
        if throttled is None and self.metered:
            # What the request may consume at most: its input (estimated) and all the output it allows.
            tokens = request.input_estimate + request.max_tokens
            throttled = await limiter.admit_tokens(tenant.id, tenant.config, user=user, tokens=tokens)
        if throttled is not None:
            kind: ErrorType = "rate_limit_error" if throttled.status_code == 429 else "api_error"
            raise LlmError(kind, throttled.detail, status=throttled.status_code, retry_after=throttled.retry_after)

    def _pricing(self, tenant: Tenant) -> Pricing:
        try:
            return tenant.shared.llm.pricing(tenant)
        except PricingError:  # logged once, with the key, file and line
            raise LlmError("api_error", "the gateway's price list for this tenant is invalid") from None

    async def _reserve(
        self,
        tenant: Tenant,
        pricing: Pricing,
        profile_limit: float | None,
        user: str | None,
        client_id: str,
        team: str | None,
        model: str,
        request: MessagesRequest,
    ) -> Reservation:
        estimate = pricing.estimate(model, request.input_estimate, request.max_tokens, at=datetime.now(UTC))
        reserved = await tenant.shared.budget_guard.reserve(
            tenant.id,
            tenant.config.budgets,
            user=user,
            team=team,
            estimate_usd=estimate,
            profile_limit=profile_limit,
            client_id=client_id,
            request_id=self.request_id,
        )
        if isinstance(reserved, BudgetExceeded):
            raise LlmError(
                reserved.error_type,
                reserved.message,
                status=reserved.status,
                retry_after=reserved.retry_after,
                should_retry=reserved.retryable,
            )
        return reserved

    # -- the upstream round trip ----------------------------------------------------------------------------------

    async def _forward(
        self, tenant: Tenant, principal: AccessTokenClaims, reference: str, body: bytes, meter: UsageMeter | None
    ) -> int:
        """Sends the request upstream and relays the answer; returns the upstream's status (0: none came, or the
        client left first)."""
        shared, llm = tenant.shared, tenant.config.llm
        key = shared.llm.api_keys.header(shared.vault, tenant.id, reference)
        request_id = current_request_id.set(self.request_id)  # vault reads are recorded with this request
        try:
            headers = self.forwarded + await key.headers(principal)
        except UpstreamError as failure:
            logger.info("tenant %s: no usable model API key: %s", tenant.id, failure.reason)
            raise LlmError("api_error", "the gateway has no usable API key for the model API") from None
        except AuditUnavailable:
            raise LlmError("api_error", "the audit log is unavailable; nothing was sent", status=503) from None
        finally:
            current_request_id.reset(request_id)
        upstream = shared.llm.upstream(llm)
        query = self.scope.get("query_string", b"")
        target = upstream.prefix + self.path + ("?" + query.decode("latin-1") if query else "")
        main = asyncio.current_task()
        assert main is not None
        watcher = asyncio.get_running_loop().create_task(self._watch(main))
        try:
            response = await upstream.pool.request("POST", target, headers, body, timeout=llm.timeout)
            try:
                if _is_event_stream(response) and response.status == 200:
                    await self._relay_events(response, meter, llm.timeout)
                else:
                    await self._relay_body(response, meter, llm.timeout)
            finally:
                await response.aclose()
            return response.status
        except asyncio.CancelledError:
            if not self.client_gone:
                raise
            main.uncancel()  # our own cancellation, for the client that left: the caller accounts what was relayed
            return 0
        except (Http1Error, ValueError) as failure:
            raise _upstream_failure(failure) from None
        finally:
            watcher.cancel()

    async def _watch(self, main: asyncio.Task[Any]) -> None:
        """Cancels the exchange when the client disconnects before the answer is complete."""
        while (await self.receive())["type"] != "http.disconnect":
            pass
        if not self.finished:
            self.client_gone = True
            main.cancel()

    async def _relay_body(self, response: Http1Response, meter: UsageMeter | None, seconds: float) -> None:
        try:
            body = await response.read(MAX_RESPONSE_BYTES, timeout=seconds)
        except (Http1Error, ValueError) as failure:
            raise _upstream_failure(failure) from None
        status = response.status
        headers = [(name, value) for name, value in response.headers if name in _RELAYED]
        if 200 <= status < 300:
            if meter is not None:
                meter.from_body(body)
        else:
            # An upstream error (429, 529 overloaded, 5xx …) keeps its status and retry-after; a body that is not
            # the API's error JSON (a proxy's HTML page) becomes one, so the client shows a message.
            body = _as_api_error(status, body)
            headers = [header for header in headers if header[0] != b"content-type"] + [_JSON_TYPE]
        headers.append((b"content-length", b"%d" % len(body)))
        self.finished = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def _relay_events(self, response: Http1Response, meter: UsageMeter | None, seconds: float) -> None:
        headers = [(name, value) for name, value in response.headers if name in _RELAYED]
        await self.send({"type": "http.response.start", "status": response.status, "headers": headers})
        broken: str | None = None
        partial: list[bytes] = []  # the start of an event whose end has not come yet
        partial_size = 0
        try:
            async for chunk in response.chunks(idle_timeout=seconds):
                if partial:
                    # Joined only once the event's end is here (a terminator may straddle the chunks): a large
                    # event arriving in many chunks costs linear time, not quadratic.
                    if _EVENT_END.search(partial[-1][-3:] + chunk) is None:
                        partial.append(chunk)
                        partial_size += len(chunk)
                        if partial_size > MAX_EVENT_BYTES:
                            broken = "an event from the model API exceeds the size limit"
                            break
                        continue
                    partial.append(chunk)
                    data = b"".join(partial)
                    partial, partial_size = [], 0
                else:
                    data = chunk
                end = 0
                for match in _EVENT_END.finditer(data):
                    if meter is not None:
                        meter.feed_event(data[end : match.end()])
                    end = match.end()
                if end:
                    # Every whole event that has arrived goes on at once, in one write; a partial one waits.
                    whole = data if end == len(data) else data[:end]
                    await self.send({"type": "http.response.body", "body": whole, "more_body": True})
                if end < len(data):
                    partial, partial_size = [data[end:]], len(data) - end
        except ResponseTimeout:
            broken = "the model API stopped sending"
        except Http1Error:
            broken = "the model API's stream broke off"
        self.finished = True
        if broken is not None:
            logger.info("llm upstream stream ended early: %s", broken)
            await self.send({"type": "http.response.body", "body": error_event("api_error", broken), "more_body": True})
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- afterwards -----------------------------------------------------------------------------------------------

    def _record(
        self,
        tenant: Tenant,
        pricing: Pricing,
        principal: AccessTokenClaims,
        user: str | None,
        team: str | None,
        model: str,
        request: MessagesRequest,
        meter: UsageMeter,
        started: float,
        at: datetime,
    ) -> Decimal:
        """Prices what the upstream reported and hands the record over (queued); returns the cost."""
        served = meter.model if meter.model is not None and pricing.knows(meter.model) else model
        usage = meter.usage
        cost = pricing.cost(served, usage, at=at)
        tenant.shared.usage_recorder.record(
            UsageRecord(
                tenant=tenant.id,
                user=user,
                team=team,
                client_id=principal.client_id,
                model=served,
                requested_model=request.model if request.model != model else None,
                usage=usage,
                cost_usd=cost,
                latency_ms=(time.perf_counter() - started) * 1000,
                at=at,
                source="proxy",
                request_id=self.request_id,
                complete=meter.complete,
            )
        )
        return cost

    async def _protected(self, tenant: Tenant, principal: AccessTokenClaims, body: bytes, model: str) -> bytes:
        """The tenant's `dlp.llm_gate`: the model API is external, so what is sent to it (system prompt and
        messages, tool results included) is held to the levels external lookups may receive, `block` actions refuse
        it and `redact` actions apply (the body is then encoded again)."""
        document = orjson.loads(body)
        content = {"content": {"system": document.get("system"), "messages": document.get("messages")}}
        outcome = guard_outgoing(
            tenant.dlp, content, "content", what="the request", target="the model API", external=True
        )
        if outcome.refusal is not None:
            details = {
                "level": outcome.level.label,
                "detections": dict(outcome.detections),
                "sources": sorted(outcome.sources),
            }
            action = Action.DLP_DETECTION if outcome.blocked else Action.EXTERNAL_LOOKUP_BLOCKED
            await self._audit(tenant, principal, "denied", model, model, outcome.refusal, details, action=action)
            raise LlmError("permission_error", outcome.refusal)
        if not outcome.changed:
            return body
        document.update((key, value) for key, value in content["content"].items() if value is not None)
        return orjson.dumps(document)

    async def _audit(
        self,
        tenant: Tenant,
        principal: AccessTokenClaims,
        outcome: Outcome,
        requested: str,
        model: str,
        reason: str | None,
        details: dict[str, Any] | None = None,
        *,
        action: Action = Action.LLM_REQUEST,
    ) -> None:
        event = AuditEvent(
            action=action,
            outcome=outcome,
            tenant=tenant.id,
            actor=actor_of(principal),
            target=f"llm:{model}",
            reason=reason,
            request_id=self.request_id,
            details={"requested_model": requested, "model": model, "client_id": principal.client_id, **(details or {})},
        )
        try:
            await tenant.audit.log.record_as_configured(event)
        except AuditUnavailable:
            raise LlmError("api_error", "the audit log is unavailable; nothing was sent", status=503) from None


def llm_principal(tenant: Tenant, credential: str, *, certificate: str | None = None) -> AccessTokenClaims:
    """Who presents `credential` to the tenant's LLM resource (the Messages API, telemetry): an access token whose
    audience is {issuer}/llm (RFC 8707: good nowhere else), or an active virtual key of this tenant. Raises
    InvalidAccessToken, whose reason is safe to show. `certificate`: the request's TLS client certificate
    thumbprint, which a certificate-bound token needs (RFC 8705 §3.2)."""
    if credential.startswith(VIRTUAL_KEY_PREFIX):
        holder = tenant.shared.llm.virtual_keys.find(tenant.id, credential)
        if holder is None:
            raise InvalidAccessToken("invalid API key")
        return holder
    return tenant.token_verifier.verify(credential, audience=tenant.llm_resource.resource, certificate=certificate)


def _unauthenticated(tenant: Tenant, message: str) -> LlmError:
    # RFC 6750 §3 with RFC 9728 §5.1: where an OAuth client learns which authorization server issues tokens here.
    challenge = f'Bearer resource_metadata="{llm_metadata_url(tenant)}"'.encode()
    return LlmError("authentication_error", message, headers=((b"www-authenticate", challenge),))


def llm_metadata_url(tenant: Tenant) -> str:
    return f"{tenant.settings.public_url}{METADATA_PREFIX}{tenant.path('/llm')}"


async def llm_resource_metadata(request: Request) -> Response:
    """GET /.well-known/oauth-protected-resource[/t/{tenant}]/llm: the LLM API's RFC 9728 metadata."""
    tenant = tenant_of(request)
    document = {
        "resource": tenant.llm_resource.resource,
        "authorization_servers": [tenant.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "LLM API (Anthropic Messages)",
    }
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})


def _is_event_stream(response: Http1Response) -> bool:
    for name, value in response.headers:
        if name == b"content-type":
            return value.lower().startswith(_SSE_TYPE)
    return False


def _upstream_failure(failure: Exception) -> LlmError:
    """The HTTP client's failures as errors the client may see (they never carry a header value or content)."""
    if isinstance(failure, ConnectFailed):
        return LlmError("api_error", "the model API is not reachable", status=502)
    if isinstance(failure, ResponseTimeout):
        return LlmError("timeout_error", "the model API did not answer in time")
    if isinstance(failure, BodyTooLarge):
        return LlmError("api_error", "the model API's answer exceeds the size limit", status=502)
    return LlmError("api_error", "the model API sent a broken answer", status=502)


def _as_api_error(status: int, body: bytes) -> bytes:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and document.get("type") == "error":
        error = document.get("error")
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            return body
    return error_body(error_type_for(status), f"the model API answered HTTP {status}")


__all__ = [
    "COUNT_TOKENS_PATH",
    "MESSAGES_PATH",
    "MessagesEndpoint",
    "llm_metadata_url",
    "llm_principal",
    "llm_resource_metadata",
]
