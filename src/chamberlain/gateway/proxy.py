"""/mcp/{server}: the policy-enforcing reverse proxy in front of upstream MCP servers.

Order of checks, each stopping the request with its protocol's error:
  Origin (403) -> bearer token (401 / 403 insufficient_scope) -> message size (413) -> JSON-RPC shape (400) ->
  2026-07-28 header/body agreement (400, -32020) -> the caller's roles reach this server (403) ->
  tool / prompt / resource policy (JSON-RPC error, nothing sent upstream) -> data protection on the arguments
  (a `block` action, or the external lookup gate: JSON-RPC error, nothing sent upstream) -> session binding (404)
  -> upstream.
List results come back filtered to what the caller may use, and results (tools/call, resources/read, prompts/get)
item by item to what the caller's clearance allows, with the detectors' redactions (gateway/data_protection.py).
The client's token is never sent upstream.

Both ways, the leak guard (vault/leak_guard.py) redacts any credential value the gateway injected into a tenant's
upstream requests: from the client's message before it goes upstream (a value copied into a tool's arguments would
reach another upstream), and from the upstream's answer, headers, body or stream, before it reaches the client (and
from there a model's context). Each redaction is recorded (dlp.detection, labels only, never a value).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from chamberlain.audit.log import AuditUnavailable
from chamberlain.gateway import jsonrpc
from chamberlain.gateway.data_protection import DataProtection
from chamberlain.gateway.events import Decision, GatewayEvent
from chamberlain.gateway.jsonrpc import ClientMessage, InvalidMessage, RequestId
from chamberlain.gateway.listing import LIST_METHODS, NamePolicy, filter_list_response
from chamberlain.gateway.protected_resource import authenticate, not_found
from chamberlain.gateway.request_metadata import mismatch, requires_metadata
from chamberlain.gateway.sse import event_data, message_event
from chamberlain.gateway.upstream import Headers, UpstreamError, UpstreamRequest, UpstreamResponse
from chamberlain.gateway.upstream_credentials import actor_of, current_request_id
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.policy.roles import Kind
from chamberlain.tenancy.routing import tenant_for_scope
from chamberlain.tenancy.tenant import ProtectedResource, Tenant
from chamberlain.vault.leak_guard import Finding, StreamScanner, findings_event
from chamberlain.web.request_id import request_id_of

logger = logging.getLogger(__name__)

# Client headers that belong to the MCP transport and go upstream; everything else (Authorization, Cookie, Host,
# Origin, forwarding headers) stays at the gateway.
_FORWARDED = frozenset(
    {b"content-type", b"accept", b"mcp-protocol-version", b"mcp-method", b"mcp-name", b"last-event-id"}
)
_PARAM_HEADER_PREFIX = b"mcp-param-"
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_BATCH_REVISIONS = (None, "2025-03-26")  # JSON-RPC batches were removed in 2025-06-18
_LISTEN_METHOD = "subscriptions/listen"  # 2026-07-28: its answer is a long-lived notification stream


class McpProxy:
    """The ASGI endpoint for /mcp/{server} (POST, GET and DELETE)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = tenant_for_scope(scope)
        resource = app.resources.get(scope["path_params"]["server"]) if app is not None else None
        if app is None or resource is None:
            await not_found()(scope, receive, send)
            return
        outcome = authenticate(app, resource, Request(scope, receive))
        if not isinstance(outcome, AccessTokenClaims):
            await outcome(scope, receive, send)
            return
        exchange = _Exchange(app, resource, outcome, scope, receive, send)
        if scope["method"] == "POST":
            await exchange.post()
        else:
            await exchange.relay_without_body()


class _Nothing:
    def permits(self, kind: Kind, name: str) -> bool:
        return False


_NOTHING = _Nothing()


class _Exchange:
    """One client HTTP request on its way through the proxy."""

    def __init__(
        self,
        app: Tenant,
        resource: ProtectedResource,
        principal: AccessTokenClaims,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.app = app
        self.server = resource.server
        self.principal = principal
        self.receive = receive
        self.send = send
        self.headers: dict[bytes, bytes] = {}
        forwarded: Headers = []
        for key, value in scope["headers"]:
            key = key.lower()
            self.headers[key] = value
            if key in _FORWARDED or key.startswith(_PARAM_HEADER_PREFIX):
                forwarded.append((key, value))
        self.forwarded = forwarded
        self.http_method: str = scope["method"]
        self.request_id = request_id_of(scope)
        self.label: str | None = self.http_method  # what events name: the JSON-RPC method once it is known
        self.cancel_on_disconnect = False  # set for 2026-07-28 requests
        self.watching = False  # a task is watching for the client's disconnect
        self.max_bytes = resource.server.config.max_message_bytes if resource.server.config else 4 * 1024 * 1024
        # Set once the caller's roles are known to reach this server: what policy lets the caller use there.
        self.access: NamePolicy = _NOTHING
        self.protection: DataProtection | None = None  # set with `access` when the tenant's data protection is on
        self.listed: dict[RequestId | None, str] = {}  # ids of list requests -> method, to filter their answers
        self.pending: list[RequestId] = []  # ids of requests that must get an answer
        self.allowed: list[GatewayEvent] = []  # this request's allowed decisions (recorded first when fail-closed)

    # -- POST: one JSON-RPC message (or a batch in 2025-03-26) --------------------------------------------------

    async def post(self) -> None:
        body = await self._read_body()
        if body is None:
            await self._refuse(413, None, jsonrpc.INVALID_REQUEST, "the message exceeds the size limit")
            return
        try:
            document, messages, batch = jsonrpc.parse_client_document(body)
        except InvalidMessage as invalid:
            await self._refuse(400, None, invalid.code, invalid.message)
            return
        self.label = messages[0].method
        version = self._header("mcp-protocol-version")
        if batch and version not in _BATCH_REVISIONS:
            await self._refuse(400, None, jsonrpc.INVALID_REQUEST, f"protocol revision {version} has no batches")
            return
        if requires_metadata(version):
            assert version is not None
            self.cancel_on_disconnect = True
            for message in messages:
                problem = mismatch(message, version, self._header("mcp-method"), self._header("mcp-name"))
                if problem is not None:
                    await self._refuse(400, message.id, jsonrpc.HEADER_MISMATCH, "header mismatch: " + problem)
                    return
        if not await self._server_allowed(messages[0].method):
            return
        if not await self._within_rate_limits(messages):
            return
        try:
            refusals = self._refusals(messages)
        except InvalidMessage as invalid:
            await self._refuse(400, messages[0].id, invalid.code, invalid.message)
            return
        if refusals:
            await self._answer_refusals(messages, refusals, batch)
            return
        if not await self._audited_first():
            return
        self.listed = {message.id: message.method for message in messages if message.method in LIST_METHODS}
        self.pending = [message.id for message in messages if message.kind == "request" and message.id is not None]
        if self.protection is not None and self.protection.request_changed:
            body = jsonrpc.encode(document)
        if self.app.leak_guard.watching(self.app.id):
            body = self._guarded(body, "request")
            self.forwarded = self._guarded_headers(self.forwarded, "request")
        request = UpstreamRequest("POST", self.forwarded, body, self.principal)
        request.long_lived = not batch and messages[0].method == _LISTEN_METHOD
        await self._relay(request)

    async def _server_allowed(self, method: str | None) -> bool:
        """Whether the caller's roles reach this server; answers 403 when they do not."""
        access = self.app.policy.access(self.principal.roles, self.server.name)
        if access is None:
            self._emit("denied", method, None, "the caller's roles do not include this server")
            description = "your roles do not include this MCP server"
            await _send_json(self.send, 403, {"error": "forbidden", "error_description": description})
            return False
        self.access = access
        if self.app.dlp.enabled:
            self.protection = DataProtection(self.app, self.server, self.principal, self.request_id)
        return True

    async def _within_rate_limits(self, messages: list[ClientMessage]) -> bool:
        """Rate limits (issue 5): each JSON-RPC request counts once against the caller's, the client's and the
        tenant's limits and the daily quota; notifications and responses are free. Answers 429 when over."""
        cost = sum(1 for message in messages if message.kind == "request")
        if not cost:
            return True
        principal = self.principal
        throttled = await self.app.rate_limiter.admit(
            self.app.id, self.app.config, user=principal.subject, client=principal.client_id, cost=cost
        )
        if throttled is None:
            return True
        self._emit("denied", messages[0].method, None, f"rate limit: {throttled.limit}")
        document = jsonrpc.error_response(messages[0].id, jsonrpc.RATE_LIMITED, throttled.detail)
        retry_after = [(b"retry-after", str(throttled.retry_after).encode())]
        await self.send(
            {"type": "http.response.start", "status": throttled.status_code, "headers": _JSON + retry_after}
        )
        await self.send({"type": "http.response.body", "body": jsonrpc.encode(document)})
        return False

    def _refusals(self, messages: list[ClientMessage]) -> dict[RequestId, str]:
        """Request ids refused by policy, with the refusal's message; emits one event per request."""
        refusals: dict[RequestId, str] = {}
        for message in messages:
            if message.kind != "request":
                continue
            target = jsonrpc.target_name(message)
            name = target[1] if target else None
            assert message.id is not None
            if target is not None and not self.access.permits(*target):
                singular = target[0][:-1]
                refusals[message.id] = f"{singular} '{name}' is not permitted for your roles"
                self._emit("denied", message.method, name, f"{singular} not permitted by policy")
                continue
            protected = self.protection.refusal(message) if self.protection is not None else None
            if protected is not None:
                refusals[message.id] = protected
                self._emit("denied", message.method, name, "refused by data protection")
            else:
                self._emit("allowed", message.method, name, None)
        return refusals

    async def _answer_refusals(
        self, messages: list[ClientMessage], refusals: dict[RequestId, str], batch: bool
    ) -> None:
        # A batch is all or nothing: nothing of it goes upstream when any part is refused.
        answers = [
            jsonrpc.error_response(
                message.id,
                jsonrpc.NOT_PERMITTED,
                refusals.get(message.id, "not sent: another request in the batch was refused"),  # type: ignore[arg-type]
            )
            for message in messages
            if message.kind == "request"
        ]
        await _send_json(self.send, 200, answers if batch else answers[0])

    # -- GET (legacy standalone stream) and DELETE (legacy session end) -----------------------------------------

    async def relay_without_body(self) -> None:
        method = self.http_method
        if not await self._server_allowed(method):
            return
        self._emit("allowed", method, None, None)
        if not await self._audited_first():
            return
        await self._relay(UpstreamRequest(method, self.forwarded, b"", self.principal, long_lived=method == "GET"))

    # -- the upstream round trip --------------------------------------------------------------------------------

    async def _relay(self, request: UpstreamRequest) -> None:
        presented = self._header("mcp-session-id")
        if presented is not None:
            request.session_id = self.app.session_binder.unbind(presented, self.server.name, self.principal)
            if request.session_id is None:
                # Sessions are not authentication: an id issued to someone else is as unknown as a made-up one.
                self._emit("denied", request.method, None, "session id not issued to this caller")
                first = self.pending[0] if self.pending else None
                await self._refuse(404, first, jsonrpc.SESSION_NOT_FOUND, "session not found")
                return
        if self.cancel_on_disconnect:
            # 2026-07-28: the client closing its connection is the cancellation of its request, whether the
            # upstream is still thinking or already streaming; the upstream's connection is closed in turn.
            await self._until_client_gone(self._round_trip(request))
        else:
            await self._round_trip(request)

    async def _round_trip(self, request: UpstreamRequest) -> None:
        upstream = self.app.upstreams.upstream(self.server)
        # Vault reads for this request's upstream credential are recorded with its request id.
        request_id = current_request_id.set(self.request_id)
        try:
            response = await upstream.send(request)
        except UpstreamError as failure:
            # A refused or missing credential arrives here too: -32002 with "no usable credential for this upstream",
            # or, for a revoked upstream grant, the re-consent message naming the source (upstream_credentials.py).
            await self._upstream_failed(failure, self.pending, started=False)
            return
        except AuditUnavailable:
            # The vault could not record the credential's read (fail-closed): nothing was sent, as for MCP requests.
            first = self.pending[0] if self.pending else None
            await self._refuse(503, first, jsonrpc.AUDIT_UNAVAILABLE, "the audit log is unavailable; nothing was sent")
            return
        finally:
            current_request_id.reset(request_id)
        try:
            headers = self._response_headers(response)
            if response.events is None:
                await self._relay_body(response, headers)
            elif self.watching:
                await self._relay_events(response, headers)
            else:
                # Earlier revisions: a disconnect is not a cancellation, but nobody is left to relay the stream to.
                await self._until_client_gone(self._relay_events(response, headers))
        finally:
            with contextlib.suppress(Exception):
                await response.aclose()

    async def _until_client_gone(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` until it ends or the client disconnects, whichever comes first (then `work` is cancelled)."""
        self.watching = True
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(self._client_gone())
        try:
            await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
        finally:
            for pending_task in (task, watcher):
                pending_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending_task

    def _response_headers(self, response: UpstreamResponse) -> Headers:
        headers: Headers = []
        for key, value in response.headers:
            if key == b"mcp-session-id":
                value = self.app.session_binder.bind(value.decode("latin-1"), self.server.name, self.principal).encode()
            headers.append((key, value))
        if self.app.leak_guard.watching(self.app.id):
            headers = self._guarded_headers(headers, "response")
        return headers

    async def _relay_body(self, response: UpstreamResponse, headers: Headers) -> None:
        body = response.body
        if response.status >= 500:
            await self._upstream_failed(
                UpstreamError("protocol", f"HTTP {response.status} from upstream"), self.pending
            )
            return
        if body:
            try:
                document = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                if response.status < 400:
                    not_json = UpstreamError("protocol", "the upstream's answer is not JSON")
                    await self._upstream_failed(not_json, self.pending)
                    return
                # Keep the status (a 404 tells a legacy client to start a new session), not the upstream's page.
                problem = f"the upstream answered HTTP {response.status}"
                first = self.pending[0] if self.pending else None
                await self._refuse(response.status, first, jsonrpc.UPSTREAM_FAILED, problem)
                return
            if self._judged(document):
                body = jsonrpc.encode(document)
            if self.app.leak_guard.watching(self.app.id):
                body = self._guarded(body, "response")
        await self.send({"type": "http.response.start", "status": response.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def _relay_events(self, response: UpstreamResponse, headers: Headers) -> None:
        assert response.events is not None
        unanswered = set(self.pending)
        names = {key for key, _ in headers}
        start_headers = headers + [header for header in _SSE if header[0] not in names]
        await self.send({"type": "http.response.start", "status": response.status, "headers": start_headers})
        # Watching from the start: a value first injected while the stream runs (a token renewed) is found too.
        scanner = self.app.leak_guard.stream(self.app.id)
        try:
            await self._relay_stream(response.events, unanswered, scanner)
        except UpstreamError as failure:
            await self._send_scanned(scanner, None)
            await self._upstream_failed(failure, sorted(unanswered, key=str), started=True)
        else:
            await self._send_scanned(scanner, None)
            if unanswered:
                broke_off = UpstreamError("protocol", "the upstream ended the stream before answering")
                await self._upstream_failed(broke_off, sorted(unanswered, key=str), started=True)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _relay_stream(
        self, events: AsyncIterator[bytes], unanswered: set[RequestId], scanner: StreamScanner
    ) -> None:
        async for event in events:
            data = event_data(event)
            if data is not None:
                try:
                    document = json.loads(data)
                except (ValueError, UnicodeDecodeError):
                    raise UpstreamError("protocol", "the upstream sent an event that is not JSON") from None
                if isinstance(document, dict) and "method" not in document:
                    unanswered.discard(document.get("id"))
                if self._judged(document):
                    event = message_event(jsonrpc.encode(document))
            await self._send_scanned(scanner, event)

    async def _send_scanned(self, scanner: StreamScanner, event: bytes | None) -> None:
        """Sends an event through the stream's leak scanner; None sends what the scanner still holds."""
        scanned = scanner.feed(event) if event is not None else scanner.close()
        if scanned.findings:
            self._leak_found(scanned.findings, "response")
        if scanned.data:
            await self.send({"type": "http.response.body", "body": scanned.data, "more_body": True})

    async def _client_gone(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _upstream_failed(
        self, failure: UpstreamError, pending: list[RequestId], *, started: bool = False
    ) -> None:
        self._emit("upstream_error", self.label, None, failure.reason)
        logger.info("upstream %s failed (%s): %s", self.server.name, failure.kind, failure.reason)
        if started:
            for request_id in pending:
                error = jsonrpc.error_response(request_id, jsonrpc.UPSTREAM_FAILED, failure.reason)
                await self.send(
                    {"type": "http.response.body", "body": message_event(jsonrpc.encode(error)), "more_body": True}
                )
            return
        if pending:
            # The client's request reached us: answer it with a JSON-RPC error it can show, not a transport failure.
            errors = [
                jsonrpc.error_response(request_id, jsonrpc.UPSTREAM_FAILED, failure.reason) for request_id in pending
            ]
            await _send_json(self.send, 200, errors[0] if len(errors) == 1 else errors)
            return
        await _send_json(self.send, 502, jsonrpc.error_response(None, jsonrpc.UPSTREAM_FAILED, failure.reason))

    # -- small pieces ---------------------------------------------------------------------------------------------

    async def _read_body(self) -> bytes | None:
        """The request body, or None when it is larger than the server's message limit (read no further)."""
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await self.receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _judged(self, document: Any) -> bool:
        """Filters list answers by policy and applies data protection to answers, in place; True when changed."""
        listed = bool(self.listed) and _filter(document, self.access, self.listed)
        protection = self.protection
        protected = protection is not None and bool(protection.awaited) and protection.guard_answer(document)
        return listed or protected

    def _guarded(self, data: bytes, direction: str) -> bytes:
        scanned = self.app.leak_guard.scan(self.app.id, data)
        if scanned.findings:
            self._leak_found(scanned.findings, direction)
        return scanned.data

    def _guarded_headers(self, headers: Headers, direction: str) -> Headers:
        return [(key, self._guarded(value, direction)) for key, value in headers]

    def _leak_found(self, findings: tuple[Finding, ...], direction: str) -> None:
        principal = self.principal
        event = findings_event(
            self.app.id,
            findings,
            upstream=self.server.name,
            direction=direction,
            actor=actor_of(principal),
            request_id=self.request_id,
            extra={"client_id": principal.client_id, "method": self.label},
        )
        self.app.audit.log.record(event)
        labels = ", ".join(sorted({finding.label for finding in findings}))
        logger.warning(
            "upstream %s: %d injected credential value(s) redacted from the %s (%s)",
            self.server.name,
            len(findings),
            direction,
            labels,
        )

    def _header(self, name: str) -> str | None:
        value = self.headers.get(name.encode())
        return value.decode("latin-1") if value is not None else None

    async def _refuse(self, status: int, request_id: RequestId | None, code: int, message: str) -> None:
        await _send_json(self.send, status, jsonrpc.error_response(request_id, code, message))

    def _emit(self, decision: Decision, method: str | None, target: str | None, reason: str | None) -> None:
        principal = self.principal
        event = GatewayEvent(
            decision,
            self.server.name,
            method,
            target,
            principal.tenant,
            principal.subject,
            principal.client_id,
            reason,
            self.request_id,
        )
        if decision == "allowed":
            self.allowed.append(event)
        self.app.events.emit(event)

    async def _audited_first(self) -> bool:
        """Where MCP requests are configured fail-closed (audit.fail_closed lists mcp.request), their records must
        be committed before anything goes upstream; when the audit log is down the request is refused."""
        if not self.app.audit.mcp_requests_durable:
            return True
        try:
            for event in self.allowed:
                await self.app.audit.record_gateway_decision_durably(event)
        except AuditUnavailable:
            first = self.pending[0] if self.pending else None
            await self._refuse(503, first, jsonrpc.AUDIT_UNAVAILABLE, "the audit log is unavailable; nothing was sent")
            return False
        return True


def _filter(document: Any, access: NamePolicy, listed: dict[RequestId | None, str]) -> bool:
    """Filters list responses in a response object or a batch of them; True when anything changed."""
    changed = False
    for response in document if isinstance(document, list) else [document]:
        if isinstance(response, dict) and "method" not in response:
            method = listed.get(response.get("id"))
            if method is not None:
                changed = filter_list_response(response, method, access) or changed
    return changed


async def _send_json(send: Send, status: int, document: object) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": jsonrpc.encode(document)})
