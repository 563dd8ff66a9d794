"""Upstream MCP servers that are local processes speaking MCP's stdio transport, behind the streamable HTTP proxy.

The proxy treats every upstream as a streamable HTTP server, so this module plays the *server side of streamable
HTTP* toward the proxy and the *client side of stdio* toward the process (newline-delimited JSON-RPC on stdin and
stdout; the process's stderr is its log).

Design, and why:
- **Legacy revisions (2025-06-18, 2025-11-25): one process per client session.** A stdio server holds one session
  (one `initialize`), so each `initialize` POST without a session id starts a process and mints a session id
  (256 bits, urlsafe; 2025-11-25 transports §"Session Management"). An unknown id gets 404, on which the client
  re-initializes; DELETE ends the session and its process. GET opens the standalone stream.
- **2026-07-28: one shared process per server.** The revision has no sessions and no handshake: every request
  carries its own envelope in `_meta`, and the SDK's stdio server serves any number of such requests on one
  connection (the first request locks the connection to that era). Sharing one process keeps a POST cheap.
- **Ids are rewritten on the way in.** Every request gets a fresh integer id on its process, and its
  `progressToken` becomes that same integer, so clients sharing a process cannot collide, and progress
  notifications, `subscriptions/listen` frames (`_meta` subscriptionId) and the response find their way back to the
  request's stream, where the client's own id and token are restored. Messages are re-encoded compactly, which
  also guarantees the one-message-per-line framing stdio requires.
- **Streams.** A POSTed request gets an SSE stream (JSON when the client accepts only JSON) carrying the messages
  related to it and ending with its response. A legacy server's requests (elicitation, sampling) and notifications
  tied to no request carry no request id over stdio, so they go on the stream of the request in flight when exactly
  one is, else on the GET stream (2025-11-25 transports: a server message goes on one stream only).
- **Cancellation.** In 2026-07-28 closing the response stream is the cancellation, so a closed stream sends
  `notifications/cancelled` for the rewritten id; in legacy revisions a disconnect is not a cancellation (2025-11-25
  transports §"Sending Messages to the Server") and the client's own `notifications/cancelled` is relayed with the
  id rewritten. A request abandoned on timeout is cancelled in both.
- **Supervision.** A process that exits is restarted, with exponential back-off (0.25 s doubling to 30 s) after
  processes that lived less than 10 s, so a crash-looping command cannot spin the CPU; a request arriving while a
  restart is further away than its timeout fails at once. Requests in flight on a dead process get
  UpstreamError("unavailable") at once. A legacy session survives its process: the client's `initialize` and
  `notifications/initialized` are replayed into the new process, so the client keeps its session id (the server's
  in-memory state is lost either way, and a 404 would make every client re-handshake for nothing).
- **Limits.** Lines on stdout are read with a StreamReader limit of `max_message_bytes`; a longer line fails the
  requests in flight on that process with "too_large" and the process is restarted (its output can no longer be
  attributed to a request). No answer or stream event within `timeout` -> UpstreamError("timeout").
- **Isolation.** Processes get PATH, HOME and LANG plus the configured `env`, never the gateway's environment (its
  secrets), run in their own process group, and are stopped by closing stdin, then SIGTERM, then SIGKILL (stdio
  shutdown, MCP lifecycle §"Shutdown"), the group included, so nothing outlives `aclose()`.
The principal is not used: a stdio process has no per-user credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from chamberlain.gateway import jsonrpc
from chamberlain.gateway.server_config import ServerConfig
from chamberlain.gateway.sse import message_event
from chamberlain.gateway.upstream import Headers, UpstreamError, UpstreamRequest, UpstreamResponse

logger = logging.getLogger("chamberlain.gateway.stdio")

Message = dict[str, Any]

INHERITED_ENV = ("PATH", "HOME", "LANG")
BACKOFF_FIRST = 0.25  # seconds before restarting a process that died young; doubles per consecutive early death
BACKOFF_CAP = 30.0
STABLE_AFTER = 10.0  # a process that lived this long died of something else than its start: no back-off
SHUTDOWN_GRACE = 2.0  # seconds between closing stdin, SIGTERM and SIGKILL
MAX_QUEUED_MESSAGES = 1024  # per request stream whose client is not reading
STANDALONE_BUFFER = 64  # legacy server messages kept for the GET stream while none is open
MAX_SESSIONS = 256  # legacy sessions (one process each) per server
SESSION_IDLE = 3600.0  # a legacy session unused this long is ended when a new one starts
PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"  # 2026-07-28 per-request envelope in `_meta`
SUBSCRIPTION_ID_KEY = "io.modelcontextprotocol/subscriptionId"  # tags `subscriptions/listen` frames in `_meta`
LEGACY_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})

_JSON: Headers = [(b"content-type", b"application/json")]
_SSE: Headers = [(b"content-type", b"text/event-stream")]


class StdioUpstream:
    def __init__(self, name: str, config: ServerConfig) -> None:
        assert config.command is not None
        self._name = name
        self._config = config
        self._backoff = _Backoff()
        self._sessions: dict[str, _Session] = {}
        self._shared: _Connection | None = None  # 2026-07-28 requests of every client
        self._closed = False

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self._closed:
            raise UpstreamError("unavailable", f"the stdio server '{self._name}' is shut down")
        if request.method == "POST":
            return await self._post(request)
        if request.session_id is None:
            # 2026-07-28 streamable HTTP §"Backward Compatibility": no GET stream and no DELETE without sessions.
            return _error(405, None, jsonrpc.INVALID_REQUEST, "GET and DELETE need a session")
        session = self._sessions.get(request.session_id)
        if session is None:
            return _session_not_found(None)
        if request.method == "DELETE":
            del self._sessions[session.id]
            await session.close()
            return UpstreamResponse(200, _JSON)
        if request.method == "GET":
            return session.listen(request.headers)
        return _error(405, None, jsonrpc.INVALID_REQUEST, "method not allowed")

    async def aclose(self) -> None:
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        shared, self._shared = self._shared, None
        await asyncio.gather(*(session.close() for session in sessions), *([shared.aclose()] if shared else []))

    # -- POST ---------------------------------------------------------------------------------------------------

    async def _post(self, request: UpstreamRequest) -> UpstreamResponse:
        try:
            message = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, None, jsonrpc.PARSE_ERROR, "the body is not valid JSON")
        if not isinstance(message, dict):
            return _error(400, None, jsonrpc.INVALID_REQUEST, "a stdio upstream takes one message per POST")
        if request.session_id is not None:
            session = self._sessions.get(request.session_id)
            if session is None:
                # 2025-11-25 transports §"Session Management": 404, and the client starts a new session.
                return _session_not_found(message.get("id"))
            return await session.post(message, request.headers)
        if message.get("method") == "initialize":
            return await self._initialize(message)
        if _is_modern(message, request.headers):
            return await self._post_modern(message, request.headers)
        return _error(400, message.get("id"), jsonrpc.INVALID_REQUEST, "a session id is required: initialize first")

    async def _initialize(self, message: Message) -> UpstreamResponse:
        await self._end_idle_sessions()
        if len(self._sessions) >= MAX_SESSIONS:
            raise UpstreamError("unavailable", f"the stdio server '{self._name}' has too many open sessions")
        connection = _Connection(self._name, self._config, self._backoff)
        try:
            call = await connection.begin(message, streaming=False)
            answer = await call.next_message()
        except BaseException:
            await connection.aclose()
            raise
        assert answer is not None
        if "error" in json.loads(answer):
            await connection.aclose()  # the server refused the handshake: no session
            return UpstreamResponse(200, _JSON, answer)
        connection.handshake.append(message)
        session = _Session(secrets.token_urlsafe(32), connection)
        self._sessions[session.id] = session
        return UpstreamResponse(200, [*_JSON, (b"mcp-session-id", session.id.encode())], answer)

    async def _post_modern(self, message: Message, headers: Headers) -> UpstreamResponse:
        if "method" not in message:
            return _error(400, None, jsonrpc.INVALID_REQUEST, "2026-07-28 clients send no responses")
        if "id" not in message:
            # 2026-07-28 streamable HTTP defines no client notifications; there is no request to relate it to.
            return UpstreamResponse(202, [])
        if self._shared is None:
            self._shared = _Connection(self._name, self._config, self._backoff)
        return await _relay_request(self._shared, message, headers, cancel_on_close=True)

    async def _end_idle_sessions(self) -> None:
        now = time.monotonic()
        idle = [session for session in self._sessions.values() if session.idle_since(now) > SESSION_IDLE]
        for session in idle:
            del self._sessions[session.id]
            logger.info("stdio server %s: ending a session idle for over %d s", self._name, SESSION_IDLE)
        await asyncio.gather(*(session.close() for session in idle))


class _Session:
    """A legacy client session: one process, plus the standalone stream for messages tied to no request."""

    def __init__(self, session_id: str, connection: _Connection) -> None:
        self.id = session_id
        self.connection = connection
        self._last_used = time.monotonic()
        self._standalone: deque[bytes] = deque(maxlen=STANDALONE_BUFFER)
        self._standalone_ready = asyncio.Event()
        self._listening = False
        self._awaiting_answer: dict[str | int, _Call] = {}  # server request id -> the request stream it went on
        connection.on_unrelated = self._route

    async def close(self) -> None:
        await self.connection.aclose()
        self._standalone_ready.set()  # ends the GET stream

    def idle_since(self, now: float) -> float:
        busy = self._listening or self.connection.busy
        return 0.0 if busy else now - self._last_used

    async def post(self, message: Message, headers: Headers) -> UpstreamResponse:
        self._last_used = time.monotonic()
        method = message.get("method")
        if method is None:  # the client's answer to an elicitation or sampling request
            await self.connection.notify(message)
            answered = message.get("id")
            call = self._awaiting_answer.pop(answered, None) if isinstance(answered, str | int) else None
            if call is not None and isinstance(answered, str | int):
                call.answered_by_client(answered)
            return UpstreamResponse(202, [])
        if "id" not in message:
            if method == "notifications/initialized":
                self.connection.handshake.append(message)
            elif method == "notifications/cancelled":
                message = self.connection.rewrite_cancellation(message)
            await self.connection.notify(message)
            return UpstreamResponse(202, [])
        return await _relay_request(self.connection, message, headers, cancel_on_close=False)

    def listen(self, headers: Headers) -> UpstreamResponse:
        if not _accepts(headers, b"text/event-stream"):
            return _error(406, None, jsonrpc.INVALID_REQUEST, "the GET stream needs Accept: text/event-stream")
        if self._listening:
            return _error(409, None, jsonrpc.INVALID_REQUEST, "this session's GET stream is already open")
        self._listening = True
        return UpstreamResponse(200, _SSE, events=self._standalone_events())

    async def _standalone_events(self) -> AsyncIterator[bytes]:
        try:
            while not self.connection.closed:
                while self._standalone:
                    yield message_event(self._standalone.popleft())
                self._standalone_ready.clear()
                await self._standalone_ready.wait()
        finally:
            self._listening = False
            self._last_used = time.monotonic()

    def _route(self, message: Message) -> None:
        call = self.connection.sole_stream()
        if call is None:
            self._standalone.append(jsonrpc.encode(message))
            self._standalone_ready.set()
            return
        call.push(message)
        request_id = message.get("id")
        if isinstance(request_id, str | int):
            call.awaits_client(request_id)
            self._awaiting_answer[request_id] = call


async def _relay_request(
    connection: _Connection, message: Message, headers: Headers, *, cancel_on_close: bool
) -> UpstreamResponse:
    streaming = _accepts(headers, b"text/event-stream")
    call = await connection.begin(message, streaming=streaming)
    if streaming:
        return UpstreamResponse(200, _SSE, events=_call_events(connection, call, cancel_on_close))
    try:
        answer = await call.next_message()
    finally:
        if not call.answered:
            connection.abandon(call, cancel=True)
    assert answer is not None
    return UpstreamResponse(200, _JSON, answer)


async def _call_events(connection: _Connection, call: _Call, cancel_on_close: bool) -> AsyncIterator[bytes]:
    timed_out = False
    try:
        while (message := await call.next_message()) is not None:
            yield message_event(message)
    except UpstreamError as failure:
        timed_out = failure.kind == "timeout"
        raise
    finally:
        if not call.answered:
            connection.abandon(call, cancel=cancel_on_close or timed_out)


class _Call:
    """One request in flight on a process: the messages for its client, in order, ending with its response."""

    def __init__(self, client_id: str | int, upstream_id: int, streaming: bool, idle_timeout: float, name: str) -> None:
        self.client_id = client_id
        self.upstream_id = upstream_id
        self.streaming = streaming
        self.progress_token: str | int | None = None
        self.answered = False
        self._idle_timeout = idle_timeout
        self._name = name
        self._messages: deque[bytes] = deque()
        self._changed = asyncio.Event()
        self._failure: UpstreamError | None = None
        self._responded = False
        self._awaiting_client: set[str | int] = set()  # server requests the client has yet to answer

    def push(self, message: Message) -> None:
        """Queues a message related to this request (dropped when the client reads JSON only)."""
        if not self.streaming or self._responded or self._failure is not None:
            return
        if len(self._messages) >= MAX_QUEUED_MESSAGES:
            self.fail(UpstreamError("protocol", "too many messages queued for a client that is not reading"))
            return
        self._messages.append(jsonrpc.encode(message))
        self._changed.set()

    def respond(self, response: Message) -> None:
        self._messages.append(jsonrpc.encode({**response, "id": self.client_id}))
        self._responded = True
        self._changed.set()

    def fail(self, failure: UpstreamError) -> None:
        if not self._responded and self._failure is None:
            self._failure = failure
            self._changed.set()

    def awaits_client(self, server_request_id: str | int) -> None:
        self._awaiting_client.add(server_request_id)

    def answered_by_client(self, server_request_id: str | int) -> None:
        self._awaiting_client.discard(server_request_id)
        self._changed.set()  # restarts the idle clock

    async def next_message(self) -> bytes | None:
        """The next message for the client, None once the response was handed out. Raises UpstreamError."""
        while True:
            if self._messages:
                message = self._messages.popleft()
                self.answered = self._responded and not self._messages
                return message
            if self.answered:
                return None
            if self._failure is not None:
                raise self._failure
            self._changed.clear()
            # A person may take their time to answer an elicitation: no idle clock while the server waits on one.
            wait = None if self._awaiting_client else self._idle_timeout
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                raise UpstreamError("timeout", f"the stdio server '{self._name}' did not answer in time") from None


class _Connection:
    """A supervised process and the requests in flight on it."""

    def __init__(self, name: str, config: ServerConfig, backoff: _Backoff) -> None:
        self.handshake: list[Message] = []  # legacy: replayed into a restarted process before anything else
        self.on_unrelated: Callable[[Message], None] = self._drop
        self.closed = False
        self._name = name
        self._config = config
        self._backoff = backoff
        self._calls: dict[int, _Call] = {}
        self._last_id = 0
        self._process: _Process | None = None  # set while it can take requests
        self._start_failed = False
        self._changed = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise())

    @property
    def busy(self) -> bool:
        return bool(self._calls)

    async def begin(self, message: Message, *, streaming: bool) -> _Call:
        """Sends a client request with its id (and progress token) rewritten; its messages come through the call."""
        process = await self._ready_process()
        self._last_id += 1
        call = _Call(message["id"], self._last_id, streaming, self._config.timeout, self._name)
        outgoing = {**message, "id": call.upstream_id}
        params = message.get("params")
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict) and "progressToken" in params["_meta"]:
            call.progress_token = params["_meta"]["progressToken"]
            outgoing["params"] = {**params, "_meta": {**params["_meta"], "progressToken": call.upstream_id}}
        self._calls[call.upstream_id] = call
        try:
            await process.write(outgoing)
        except UpstreamError:
            self._calls.pop(call.upstream_id, None)
            raise
        return call

    async def notify(self, message: Message) -> None:
        process = await self._ready_process()
        await process.write(message)

    def abandon(self, call: _Call, *, cancel: bool) -> None:
        """Forgets a request whose client left; with `cancel`, tells the process to stop working on it."""
        if self._calls.pop(call.upstream_id, None) is None or not cancel or self._process is None:
            return
        reason = "the client closed the stream or the request timed out"
        self._process.write_nowait(_cancelled(call.upstream_id, reason))

    def rewrite_cancellation(self, message: Message) -> Message:
        """The client's notifications/cancelled, naming the request by the id the process knows."""
        params = message.get("params")
        if isinstance(params, dict):
            for call in self._calls.values():
                if call.client_id == params.get("requestId"):
                    return {**message, "params": {**params, "requestId": call.upstream_id}}
        return message

    def sole_stream(self) -> _Call | None:
        streams = [call for call in self._calls.values() if call.streaming]
        return streams[0] if len(streams) == 1 else None

    async def aclose(self) -> None:
        self.closed = True
        self._signal()
        self._supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._supervisor

    # -- the process's lifecycle --------------------------------------------------------------------------------

    async def _ready_process(self) -> _Process:
        deadline = time.monotonic() + self._config.timeout
        while True:
            if self.closed:
                raise UpstreamError("unavailable", f"the stdio server '{self._name}' was stopped")
            if self._process is not None:
                return self._process
            if self._start_failed:
                raise UpstreamError("unavailable", f"the stdio server '{self._name}' could not be started")
            remaining = deadline - time.monotonic()
            if self._backoff.wait_time() > remaining:
                raise UpstreamError("unavailable", f"the stdio server '{self._name}' is restarting after failures")
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                raise UpstreamError("timeout", f"the stdio server '{self._name}' did not start in time") from None

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _supervise(self) -> None:
        while not self.closed:
            await asyncio.sleep(self._backoff.wait_time())
            try:
                process = await _Process.start_uncancelled(self._name, self._config)
            except OSError as failure:
                logger.warning("stdio server %s: cannot start its command: %s", self._name, failure.strerror)
                self._start_failed = True
                self._backoff.record_exit(0.0)
                self._signal()
                continue
            self._start_failed = False
            try:
                await self._serve(process)
            finally:
                self._process = None
                self._fail_calls(UpstreamError("unavailable", f"the stdio server '{self._name}' was stopped"))
                await process.terminate()
                self._signal()

    async def _serve(self, process: _Process) -> None:
        """Runs one process until its output ends."""
        reader = asyncio.create_task(self._read(process))
        try:
            if self.handshake:
                await self._replay_handshake(process)
            self._process = process
            self._signal()
            await reader
        except UpstreamError:
            logger.warning("stdio server %s: the restarted process did not take the session's handshake", self._name)
            process.broken = True
            self._backoff.record_exit(process.age())
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _replay_handshake(self, process: _Process) -> None:
        for message in self.handshake:
            if "id" not in message:
                await process.write(message)
                continue
            self._last_id += 1
            call = _Call(message["id"], self._last_id, False, self._config.timeout, self._name)
            self._calls[call.upstream_id] = call
            await process.write({**message, "id": call.upstream_id})
            await call.next_message()
        logger.info("stdio server %s: restarted process resumed its session", self._name)

    async def _read(self, process: _Process) -> None:
        """Dispatches the process's messages; when its output ends, the requests in flight fail at once."""
        try:
            async for message in process.messages():
                self._dispatch(message)
        except MessageTooLarge:
            logger.warning("stdio server %s: a message exceeds the size limit; restarting the process", self._name)
            process.broken = True
            self._fail_calls(UpstreamError("too_large", f"an answer of '{self._name}' exceeds the message size limit"))
        # Recorded before anyone hears of the failure, so a retry already sees the back-off.
        self._backoff.record_exit(process.age())
        self._fail_calls(UpstreamError("unavailable", f"the stdio server '{self._name}' exited"))

    def _fail_calls(self, failure: UpstreamError) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.fail(failure)

    def _dispatch(self, message: Message) -> None:
        upstream_id = message.get("id")
        if "method" not in message:  # a response: ids the gateway sent are plain ints (never bools)
            call = self._calls.pop(upstream_id, None) if type(upstream_id) is int else None
            if call is not None:
                call.respond(message)
            return
        params = message.get("params")
        if upstream_id is None and isinstance(params, dict):
            call = self._related_call(params)
            if call is not None:
                call.push({**message, "params": _restore_related(params, call)})
                return
        self.on_unrelated(message)

    def _related_call(self, params: dict[str, Any]) -> _Call | None:
        meta = params.get("_meta")
        for key in (params.get("progressToken"), meta.get(SUBSCRIPTION_ID_KEY) if isinstance(meta, dict) else None):
            if type(key) is int and key in self._calls:
                return self._calls[key]
        return None

    def _drop(self, message: Message) -> None:
        logger.debug("stdio server %s: dropped a %s tied to no request", self._name, message.get("method"))


def _restore_related(params: dict[str, Any], call: _Call) -> dict[str, Any]:
    """A notification's params with the client's progress token and request id back in place of the rewritten ones."""
    restored = dict(params)
    if "progressToken" in params:
        restored["progressToken"] = call.progress_token
    meta = params.get("_meta")
    if isinstance(meta, dict) and SUBSCRIPTION_ID_KEY in meta:
        restored["_meta"] = {**meta, SUBSCRIPTION_ID_KEY: call.client_id}
    return restored


class MessageTooLarge(Exception):
    pass


class _Process:
    """One child process: JSON-RPC lines in and out, stderr to the log."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, write_timeout: float) -> None:
        self._name = name
        self._write_timeout = write_timeout
        self._started = time.monotonic()
        self.broken = False  # its output can no longer be trusted: stop it without waiting for a clean exit
        self._process = process
        self._stderr = asyncio.create_task(self._log_stderr())

    @classmethod
    async def start_uncancelled(cls, name: str, config: ServerConfig) -> _Process:
        """Starts the process; cancelled meanwhile, it still starts and is stopped, so none is left behind."""
        starting = asyncio.ensure_future(cls.start(name, config))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(OSError):
                await (await starting).terminate()
            raise

    @classmethod
    async def start(cls, name: str, config: ServerConfig) -> _Process:
        assert config.command is not None
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ} | config.env
        process = await asyncio.create_subprocess_exec(
            *config.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=config.max_message_bytes,  # a longer line raises instead of growing the buffer
            start_new_session=True,  # its own process group: signals reach its children too
        )
        logger.info("stdio server %s: started process %d", name, process.pid)
        return cls(name, process, config.timeout)

    def age(self) -> float:
        return time.monotonic() - self._started

    async def messages(self) -> AsyncIterator[Message]:
        """The JSON-RPC messages the process writes, until it closes stdout. Raises MessageTooLarge."""
        assert self._process.stdout is not None
        while True:
            try:
                line = await self._process.stdout.readline()
            except ValueError:  # asyncio.LimitOverrunError, as readline reports it
                raise MessageTooLarge from None
            if not line:
                return
            try:
                message = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                message = None
            if isinstance(message, dict):
                yield message
            elif line.strip():
                # stdio transport: the server MUST NOT write anything to stdout that is not a valid MCP message.
                logger.warning(
                    "stdio server %s: ignored %d bytes on stdout that are not a message", self._name, len(line)
                )

    async def write(self, message: Message) -> None:
        stdin = self._process.stdin
        try:
            if stdin is None or stdin.is_closing():
                raise ConnectionError
            stdin.write(jsonrpc.encode(message) + b"\n")
            await asyncio.wait_for(stdin.drain(), self._write_timeout)
        except TimeoutError:
            raise UpstreamError("timeout", f"the stdio server '{self._name}' does not read its input") from None
        except (ConnectionError, RuntimeError):
            raise UpstreamError("unavailable", f"the stdio server '{self._name}' exited") from None

    def write_nowait(self, message: Message) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.write(jsonrpc.encode(message) + b"\n")

    async def terminate(self) -> None:
        """Closes stdin, then SIGTERM, then SIGKILL to the process group, each after a grace period."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        if self.broken:
            self._signal_group(signal.SIGTERM)
        for next_signal in (signal.SIGTERM, signal.SIGKILL):
            try:
                await asyncio.wait_for(self._process.wait(), SHUTDOWN_GRACE)
                break
            except TimeoutError:
                self._signal_group(next_signal)
        await self._process.wait()
        # Children it left behind still hold the group (Linux keeps a pid in use while its group has members).
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stderr, SHUTDOWN_GRACE)  # the rest of its log, unless a child holds stderr
        self._stderr.cancel()
        logger.info("stdio server %s: process %d ended (%s)", self._name, self._process.pid, self._process.returncode)

    def _signal_group(self, signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal_number)

    async def _log_stderr(self) -> None:
        assert self._process.stderr is not None
        while True:
            try:
                line = await self._process.stderr.readline()
            except ValueError:
                logger.info("stdio server %s: (a log line over the size limit was dropped)", self._name)
                continue
            if not line:
                return
            logger.info("stdio server %s: %s", self._name, line.decode("utf-8", "replace").rstrip())


class _Backoff:
    """Consecutive early deaths of one server's processes, and when the next start is allowed."""

    def __init__(self) -> None:
        self._failures = 0
        self._retry_at = 0.0

    def record_exit(self, lifetime: float) -> None:
        if lifetime >= STABLE_AFTER:
            self._failures = 0
            self._retry_at = 0.0
            return
        self._failures += 1
        self._retry_at = time.monotonic() + min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (self._failures - 1))

    def wait_time(self) -> float:
        return max(0.0, self._retry_at - time.monotonic())


def _is_modern(message: Message, headers: Headers) -> bool:
    """A 2026-07-28 message: its envelope in `_meta` (requests), or a modern MCP-Protocol-Version header."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta:
        return True
    version = _header(headers, b"mcp-protocol-version")
    return version is not None and version.decode("latin-1") not in LEGACY_VERSIONS


def _accepts(headers: Headers, media_type: bytes) -> bool:
    accept = _header(headers, b"accept")
    return accept is not None and media_type in accept.lower()


def _header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _cancelled(upstream_id: int, reason: str) -> Message:
    return {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": upstream_id, "reason": reason},
    }


def _session_not_found(request_id: object) -> UpstreamResponse:
    return _error(404, request_id, jsonrpc.SESSION_NOT_FOUND, "session not found")


def _error(status: int, request_id: object, code: int, message: str) -> UpstreamResponse:
    valid_id = request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
    return UpstreamResponse(status, _JSON, jsonrpc.encode(jsonrpc.error_response(valid_id, code, message)))
