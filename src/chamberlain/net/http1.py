"""A lean HTTP/1.1 client with keep-alive connections to one origin: the proxy's hot path to upstream servers.

Why not httpx: measured on the same machine, httpx costs about ten times the client CPU of an asyncio Protocol
driving llhttp (through `httptools`), and the gateway's whole budget per proxied request is under a millisecond.
llhttp does all the parsing (strict mode: no leniencies, so ambiguous framing is an error, RFC 9112 §6.3); this
module only writes requests and manages connections. TLS is the standard library's `ssl`.

Rules kept here:
- A connection is reused only once its response has been received completely and the server allows it (HTTP/1.1
  without `Connection: close`, RFC 9112 §9.3); anything else (timeout, error, cancellation, a body left unread)
  closes it.
- A request is retried once, on a fresh connection, only when it is idempotent (RFC 9110 §9.2.2) and went out on a
  reused connection that closed without a single byte of answer: the keep-alive race of RFC 9112 §9.3.1, where the
  server dropped the idle connection as the request was sent. A request that got any answer is never retried.
- Header names and values that could split a request (CR, LF, NUL; RFC 9110 §5.5) are refused before anything is
  written, and the framing and connection headers belong to the pool.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]

# Idempotent methods (RFC 9110 §9.2.2): the only ones retried after a request may have been sent.
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Methods whose empty requests carry no Content-Length (RFC 9110 §8.6: "SHOULD NOT send" one without content).
_NO_CONTENT_EXPECTED: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
# Framing and connection management are the pool's (RFC 9110 §7.6.1, RFC 9112 §6): a caller's copy could smuggle.
_POOL_OWNED: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te", b"trailer",
     b"proxy-connection"}
)  # fmt: skip
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_METHOD: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET: Final = re.compile(r"/[\x21-\x7e]*|\*")  # origin-form or asterisk-form (RFC 9112 §3.2), no spaces or CTLs
_UNSAFE_IN_VALUE: Final = re.compile(rb"[\r\n\x00]")  # RFC 9110 §5.5

_PAUSE_ABOVE: Final = 1 << 20  # unconsumed body bytes at which the socket stops being read
_MAX_HEAD_BYTES: Final = 64 * 1024  # llhttp itself has no limit on the size of a response head


class Http1Error(Exception):
    """The exchange failed. Messages name what went wrong, never header values or message contents."""


class ConnectFailed(Http1Error):
    """No connection could be made (refused, unresolvable, timed out, TLS verification failed)."""


class ResponseTimeout(Http1Error):
    """The response head (or, while reading, the next body bytes) did not arrive in time."""


class ProtocolFailure(Http1Error):
    """The response was malformed, or the connection closed before it was complete."""


class BodyTooLarge(Http1Error):
    """The response body exceeded the caller's limit."""


class _NoAnswer(ProtocolFailure):
    """The connection closed before any byte of the response arrived (the request may never have been read)."""


class Http1Pool:
    """Keep-alive connections to ONE origin (scheme, host, port)."""

    def __init__(
        self,
        origin: str,
        *,
        max_connections: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        idle_timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ValueError("the origin must be http://host[:port] or https://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("the origin must not have a path, query or fragment")
        if not parts.hostname.isascii():
            raise ValueError("give the origin's host in its ASCII (IDNA) form")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        tls = parts.scheme == "https"
        if not tls and ssl_context is not None:
            raise ValueError("an ssl_context needs an https origin")
        default_port = 443 if tls else 80
        self._host = parts.hostname
        self._port = parts.port or default_port
        self._ssl = (ssl_context or ssl.create_default_context()) if tls else None
        # RFC 9110 §7.2: the authority, with the port only when it is not the scheme's default.
        authority = f"[{self._host}]" if ":" in self._host else self._host
        if self._port != default_port:
            authority = f"{authority}:{self._port}"
        self._host_header = authority.encode("ascii")
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: list[_Connection] = []  # most recently used last: reuse the warmest, let the oldest expire
        self._open: set[_Connection] = set()
        self._slots_taken = 0  # connections open or being opened; at most max_connections
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 - a timer on our own future is cheaper than asyncio.timeout's cancellation
    ) -> Http1Response:
        """Sends one request and returns once the response head has arrived (within `timeout` seconds, counting
        the wait for a free connection). The caller must consume the body (`read`, `chunks`) or `aclose` it."""
        payload = self._encode(method, target, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        idle = self._idle
        if idle and idle[-1].usable():
            connection = idle.pop()  # the common case, without a coroutine
        else:
            connection = await self._acquire(loop, deadline)
        retried = False
        while True:
            try:
                await connection.exchange(payload, deadline, method == "HEAD")
                break
            except _NoAnswer:
                if retried or not connection.reused or method not in _IDEMPOTENT:
                    self._discard(connection)
                    raise
                retried = True  # the keep-alive race (RFC 9112 §9.3.1): once, on a fresh connection
                connection = await self._replace(loop, connection, deadline)
            except BaseException:
                self._discard(connection)
                raise
        response = Http1Response(self, connection)
        if connection.complete:
            response._detach()  # the whole answer came with the head: free the connection at once
        return response

    async def aclose(self) -> None:
        """Closes every connection; requests in flight fail, later ones raise ConnectFailed."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the connection pool is closed"))
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()

    def _encode(self, method: str, target: str, headers: Headers, body: bytes) -> bytes:
        """The whole request in one buffer (one join, one write), after refusing anything that could split it."""
        if _METHOD.fullmatch(method) is None:
            raise ValueError("the method is not an HTTP token")
        if _TARGET.fullmatch(target) is None:
            raise ValueError("the request target must be an origin-form path without spaces or control characters")
        parts = [method.encode(), b" ", target.encode(), b" HTTP/1.1\r\nhost: ", self._host_header]
        if body or method not in _NO_CONTENT_EXPECTED:
            parts += (b"\r\ncontent-length: ", b"%d" % len(body))
        for name, value in headers:
            if _TOKEN.fullmatch(name) is None:
                raise ValueError("a header name is not an HTTP token")
            if name.lower() in _POOL_OWNED:
                raise ValueError(f"the {name.decode()} header is set by the connection pool")
            if _UNSAFE_IN_VALUE.search(value) is not None:
                raise ValueError(f"the value of the {name.decode()} header contains CR, LF or NUL")
            parts += (b"\r\n", name, b": ", value)
        parts += (b"\r\n\r\n", body)
        return b"".join(parts)

    # Slots: every open (or opening) connection holds one; a freed slot or connection goes to the longest waiter.

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        if self._closed:
            raise ConnectFailed("the connection pool is closed")
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
            self._discard(connection)
        if self._slots_taken < self._max_connections:
            self._slots_taken += 1
            return await self._connect(loop, deadline)
        handed = await self._wait_for_slot(loop, deadline)
        if handed is None:
            return await self._connect(loop, deadline)
        if handed.usable():
            return handed
        return await self._replace(loop, handed, deadline)  # it died on its way here

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection | None:
        """Waits until a connection (returned) or an empty slot (None) is handed over."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_at(deadline, _expire, waiter, "no connection became free in time")
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed over just as this task was cancelled: pass it on rather than leak it.
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self._release(handed)
            raise
        finally:
            timer.cancel()

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        """Opens a connection in a slot already taken; gives the slot back if that fails."""
        if self._closed:
            self._free_slot()
            raise ConnectFailed("the connection pool is closed")
        try:
            async with asyncio.timeout(min(self._connect_timeout, deadline - loop.time())):
                _, connection = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except BaseException as exc:
            self._free_slot()
            if isinstance(exc, TimeoutError):
                raise ConnectFailed("connecting to the upstream timed out") from None
            if isinstance(exc, OSError):  # refused, unreachable, unresolvable, TLS failures (ssl.SSLError)
                raise ConnectFailed(f"cannot connect to the upstream: {type(exc).__name__}") from None
            raise
        self._open.add(connection)
        if self._closed:  # closed while connecting
            self._discard(connection)
            raise ConnectFailed("the connection pool is closed")
        return connection

    async def _replace(self, loop: asyncio.AbstractEventLoop, stale: _Connection, deadline: float) -> _Connection:
        """Closes `stale` (which still holds its slot) and opens a fresh connection in that slot."""
        stale.close()
        self._open.discard(stale)
        return await self._connect(loop, deadline)

    def _release(self, connection: _Connection) -> None:
        """Takes back a connection whose response was fully received: pooled if reusable, closed otherwise."""
        if self._closed or not connection.reusable():
            self._discard(connection)
            return
        connection.go_idle()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._idle_timeout, self._sweep)

    def _discard(self, connection: _Connection) -> None:
        """Closes a connection and frees its slot (once, however often it is called)."""
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            self._free_slot()

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter
                return
        self._slots_taken -= 1

    def _sweep(self) -> None:
        """Closes connections idle for longer than idle_timeout (the oldest are first in the list)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        expired_before = loop.time() - self._idle_timeout
        idle = self._idle
        while idle and idle[0].idle_since <= expired_before:
            self._discard(idle.pop(0))
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self._idle_timeout, self._sweep)


class Http1Response:
    """A response whose head has arrived. Its body is read once, whole (`read`) or as it comes (`chunks`)."""

    __slots__ = ("_connection", "_pending", "_pending_size", "_pool", "headers", "status")

    def __init__(self, pool: Http1Pool, connection: _Connection) -> None:
        self.status: int = connection.status
        self.headers: Headers = connection.headers  # names lower-cased
        self._pool = pool
        self._connection: _Connection | None = connection  # None once the body is all here (or abandoned)
        self._pending: list[bytes] = []  # body bytes received and not yet given to the caller
        self._pending_size = 0

    async def read(self, limit: int, *, timeout: float) -> bytes:  # noqa: ASYNC109 - as in Http1Pool.request
        """The whole body, which must arrive within `timeout` seconds; BodyTooLarge past `limit` bytes."""
        connection = self._connection
        if connection is not None:
            deadline = asyncio.get_running_loop().time() + timeout
            try:
                while not connection.complete:
                    self._take(connection)
                    if self._pending_size > limit:
                        raise BodyTooLarge("the response body exceeds the limit")
                    if connection.error is not None:
                        raise connection.error
                    await connection.wait(deadline)
            except BaseException:
                self._abandon()
                raise
            self._detach()
        if self._pending_size > limit:
            raise BodyTooLarge("the response body exceeds the limit")
        pending = self._pending
        self._pending = []
        self._pending_size = 0
        return pending[0] if len(pending) == 1 else b"".join(pending)

    async def chunks(self, *, idle_timeout: float | None) -> AsyncIterator[bytes]:
        """The body as it arrives, de-chunked; ResponseTimeout when nothing comes for `idle_timeout` seconds."""
        try:
            while True:
                if self._pending:
                    pending = self._pending
                    self._pending = []
                    self._pending_size = 0
                    yield pending[0] if len(pending) == 1 else b"".join(pending)
                    continue
                connection = self._connection
                if connection is None:
                    return
                self._take(connection)
                if self._pending:
                    continue
                if connection.complete:
                    self._detach()
                    return
                if connection.error is not None:
                    raise connection.error
                loop = asyncio.get_running_loop()
                await connection.wait(None if idle_timeout is None else loop.time() + idle_timeout)
        except BaseException:  # including GeneratorExit: the caller stopped early
            self._abandon()
            raise

    async def aclose(self) -> None:
        """Releases the connection: back to the pool if the body was all received, closed otherwise."""
        connection = self._connection
        if connection is not None and connection.complete:
            self._detach()
        else:
            self._abandon()
        self._pending = []
        self._pending_size = 0

    def _take(self, connection: _Connection) -> None:
        if connection.buffered:
            self._pending_size += connection.buffered
            self._pending += connection.take_body()

    def _detach(self) -> None:
        """The body is complete: keep what is unread and hand the connection back."""
        connection = self._connection
        if connection is not None:
            self._take(connection)
            self._connection = None
            self._pool._release(connection)

    def _abandon(self) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._pool._discard(connection)


class _Connection(asyncio.Protocol):
    """One transport and its llhttp parser; holds the state of the response in flight."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._in_flight = False  # between writing a request and handing the connection back
        self._lost = False
        self._paused = False
        self.reused = False  # has been back in the pool since it was opened
        self.idle_since = 0.0
        self._reset(head_request=False)

    def _reset(self, *, head_request: bool) -> None:
        """Forgets the previous response."""
        self._head_request = head_request
        self._received = 0
        self._interim = False
        self._framed = False  # Content-Length or chunked; otherwise the body ends with the connection
        self.status = 0
        self.headers: Headers = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.error: Http1Error | None = None
        self._body: list[bytes] = []
        self.buffered = 0  # bytes in _body

    # Used by the pool and the response.

    async def exchange(self, payload: bytes, deadline: float, head_request: bool) -> None:
        """Writes the request and waits for the response head."""
        if not self.usable():
            raise _NoAnswer("the connection closed before the request was sent")
        assert self._transport is not None
        if self.reused:
            self._reset(head_request=head_request)
        else:
            self._head_request = head_request
        self._in_flight = True
        self._transport.write(payload)
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self.wait(deadline)

    async def wait(self, deadline: float | None) -> None:
        """Until the parser makes progress, the connection closes, or `deadline` passes (ResponseTimeout)."""
        waiter = self._loop.create_future()
        self._waiter = waiter
        if deadline is None:
            try:
                await waiter
            finally:
                self._waiter = None
            return
        timer = self._loop.call_at(deadline, _expire, waiter, "the upstream did not answer in time")
        try:
            await waiter
        finally:
            self._waiter = None
            timer.cancel()

    def take_body(self) -> list[bytes]:
        body = self._body
        if body:
            self._body = []
            self.buffered = 0
            if self._paused:
                self._paused = False
                assert self._transport is not None
                self._transport.resume_reading()
        return body

    def usable(self) -> bool:
        return not self._lost and self._transport is not None and not self._transport.is_closing()

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self._body and self.usable()

    def go_idle(self) -> None:
        self._in_flight = False
        self.reused = True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._in_flight or self.complete:
            # Bytes nobody asked for (say, a 408 before the server hangs up): nothing more can be trusted here.
            self._fail(ProtocolFailure("the upstream sent bytes outside a response"))
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolFailure("the upstream switched protocols"))
        except httptools.HttpParserError:
            self._fail(ProtocolFailure("the upstream sent a malformed HTTP response"))
        else:
            if not self.head_done and self._received > _MAX_HEAD_BYTES:
                self._fail(ProtocolFailure("the response head is too large"))
            elif self.buffered > _PAUSE_ABOVE and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True  # an idle connection stays in the pool until taken (then replaced) or swept
        if not self._in_flight:
            return
        if not self.complete and self.error is None:
            if self.head_done and not self._framed and exc is None:
                self.complete = True  # a body without length ends with the connection (RFC 9112 §6.3 item 8)
                self.keep_alive = False
            elif self._received == 0:
                self.error = _NoAnswer("the connection closed before any response arrived")
            else:
                self.error = ProtocolFailure("the connection closed in the middle of the response")
        self._wake()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise ProtocolFailure("a second response")  # surfaces as HttpParserError in data_received

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a trailer field of a chunked body: dropped (RFC 9110 §6.5), the head was handed out already
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and value.lower().rstrip().endswith(b"chunked")):
            self._framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # an interim response (RFC 9110 §15.2); the final one follows
            self._interim = True
            self.headers = []
            self._framed = False
            return
        self.status = status
        # RFC 9112 §9.3: persistent by default in HTTP/1.1 only; we never ask an HTTP/1.0 server to keep alive.
        self.keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"
        self.head_done = True
        if self._head_request:
            # llhttp cannot be told that a HEAD response has no body (RFC 9110 §9.3.2), so it would take the next
            # response for one: mark it complete here and never reuse the connection.
            self.complete = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True

    # Internals

    def _fail(self, error: Http1Error) -> None:
        if not self.complete:
            self.error = error
        self.keep_alive = False
        if self._transport is not None:
            self._transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _expire(waiter: asyncio.Future[Any], reason: str) -> None:
    if not waiter.done():
        waiter.set_exception(ResponseTimeout(reason))
