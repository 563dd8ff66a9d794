"""A lean pipelined Redis client (RESP2 over asyncio, parsed by hiredis): the rate limiter's hot path to Redis.

Why not redis-py: measured on the 2-core bench machine (bench/rate_limit_bench.py, 16 requests in flight), one
EVALSHA round trip through redis-py's asyncio client cost 130-190 µs of the gateway's CPU, with or without hiredis
as its parser (its cost is mostly outside parsing: per command, a connection taken from its pool and given back,
a write and a drain, a read through a stream reader), where the gateway's whole budget per proxied request is
under a millisecond; the same round trip here costs about 10 µs. The parsing is hiredis's (the C parser redis-py
itself uses when installed); this module only writes commands and manages connections, as net/http1.py does for
HTTP/1.1 with llhttp.

Rules kept here:
- Many coroutines share few connections. A Redis server answers one connection's commands in the order it received
  them, so each connection keeps a first-in first-out queue of waiters: a command's waiter and its bytes are queued
  in the same step, with no await in between, so the queue's order is the wire's order without any lock
  (pipelining).
- A waiter that gives up (its task was cancelled) keeps its place in the queue: its reply is read and dropped, so
  every later reply still reaches its own waiter.
- Commands queued during one pass of the event loop go out in one write (one system call on our side and one read
  on Redis's): under load the commands of concurrent requests share segments, and a lone command waits for no
  timer, only for the end of the current pass.
- A connection is closed, and every command waiting on it fails, when its oldest command is unanswered after
  `timeout` seconds, when the server closes it, or when its bytes are not RESP. Nothing is retried here: a command
  that may have run (a script that counts) must not run twice on the client's initiative. The next command on that
  connection's slot opens a fresh one.
- Connecting is TCP (TLS for rediss://, with the system's trust store and host name checks) or a Unix socket
  (unix://), then AUTH and SELECT as the URL says, all within `connect_timeout`. Errors name what failed and where
  (host and port), never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

# What hiredis hands back for RESP2: simple and bulk strings as bytes (no decoding: callers know their types),
# integers, nil as None, arrays as lists. Error replies become ServerError instead.
Reply = bytes | int | None | list["Reply"]
Argument = bytes | str | int | float

_DEFAULT_PORT: Final = 6379
# hiredis's stub types its argument as a 1-tuple; it takes a tuple of any length and returns the command's bytes.
_pack: Final = cast(Callable[[tuple[Argument, ...]], bytes], hiredis.pack_command)


class RespError(Exception):
    """Redis could not answer. Messages name what went wrong and where, never credentials or command contents."""


class ConnectFailed(RespError):
    """No usable connection could be made (refused, unresolvable, timed out, TLS failure, AUTH or SELECT refused)."""


class ReplyTimeout(RespError):
    """A command was not answered within the timeout; its connection was closed."""


class ConnectionLost(RespError):
    """The connection closed (or was closed) before this command was answered: it may or may not have run."""


class ProtocolFailure(RespError):
    """The server sent bytes that are not RESP, or replies nobody asked for; the connection was closed."""


class ServerError(RespError):
    """An error reply (`-ERR …`): the server read the command and refused it. The connection stays usable."""

    @property
    def code(self) -> str:
        """The error's first word by convention (ERR, NOSCRIPT, WRONGTYPE, NOAUTH, …)."""
        return str(self).split(" ", 1)[0]


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is and how to log in, from a redis://, rediss:// or unix:// URL (`parse_redis_url`)."""

    host: str | None  # None for a Unix socket
    port: int
    path: str | None  # the Unix socket's path
    tls: bool
    db: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def location(self) -> str:
        """For logs and errors: host and port (or the socket's path), nothing of the credentials."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_redis_url(url: str) -> RedisAddress:
    """redis://[[user]:password@]host[:port][/db], rediss://… (TLS), unix://[[user]:password@]/path[?db=N].

    Query parameters other than `db` are refused rather than ignored: an ignored `ssl_cert_reqs` or timeout would
    silently mean something other than what the operator wrote. Error messages never repeat the URL (it may carry
    a password).
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"a Redis URL must be redis://, rediss:// or unix://, not {scheme or 'a bare'}://")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - {"db"})
    if unknown:
        raise ValueError(f"unsupported Redis URL parameter(s): {', '.join(unknown)} (only db is understood)")
    if parts.fragment:
        raise ValueError("a Redis URL has no fragment")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    db_text = query["db"][-1] if "db" in query else ""
    if scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// Redis URL needs the socket's path: unix:///path/to/redis.sock")
        return RedisAddress(None, 0, unquote(parts.path), False, _db(db_text), username, password)
    if not parts.hostname:
        raise ValueError("a Redis URL needs a host: redis://HOST:PORT/DB")
    try:
        port = parts.port or _DEFAULT_PORT
    except ValueError:
        raise ValueError("the Redis URL's port is not a number from 0 to 65535") from None
    path = parts.path.strip("/")
    if path and db_text:
        raise ValueError("a Redis URL names its database once: in the path or as ?db=, not both")
    return RedisAddress(parts.hostname, port, None, scheme == "rediss", _db(path or db_text), username, password)


def pack(*args: Argument) -> bytes:
    """One command in RESP (an array of bulk strings), as `execute` sends it."""
    return _pack(args)


def bulk(value: bytes) -> bytes:
    """One bulk string in RESP: a part of a command that `execute_packed` sends."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _db(text: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError("the Redis database must be a number (redis://HOST:PORT/0)")
    return int(text)


class RedisPool:
    """Up to `connections` pipelined connections to one Redis server, used in turn.

    One connection carries any number of concurrent commands; a few spread the work of a busy process over more
    than one socket, so one slow or broken connection holds up only its share. Connections open on first use.
    """

    def __init__(
        self,
        address: RedisAddress | str,
        *,
        connections: int = 1,
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(address, str):
            address = parse_redis_url(address)
        if connections < 1:
            raise ValueError("connections must be at least 1")
        if ssl_context is not None and not address.tls:
            raise ValueError("an ssl_context needs a rediss:// URL")
        self.address = address
        self._ssl = (ssl_context or ssl.create_default_context()) if address.tls else None
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._slots: list[_Connection | None] = [None] * connections
        self._opening: list[asyncio.Task[_Connection] | None] = [None] * connections
        self._next = 0
        self._closed = False

    @property
    def location(self) -> str:
        return self.address.location

    async def execute(self, *args: Argument) -> Reply:
        """Sends one command and returns its reply; ServerError for an error reply, other RespErrors when Redis
        could not answer (the command may then have run or not)."""
        return await self.execute_packed(_pack(args))

    async def execute_packed(self, payload: bytes) -> Reply:
        """`execute` for a command already encoded: exactly one RESP array of bulk strings (`pack`, `bulk`), built
        by the caller from parts it encodes once and reuses. Anything else would desynchronise the connection."""
        slots = self._slots
        index = self._next
        self._next = index + 1 if index + 1 < len(slots) else 0
        connection = slots[index]
        if connection is None or not connection.usable():
            connection = await self._open(index)
        return await connection.send(payload)

    async def aclose(self) -> None:
        """Closes every connection; commands in flight fail with ConnectionLost, later ones with ConnectFailed."""
        self._closed = True
        for index, task in enumerate(self._opening):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                self._opening[index] = None
        for index, connection in enumerate(self._slots):
            if connection is not None:
                connection.close()
                self._slots[index] = None

    # Opening: one attempt per slot at a time, shared by every caller that meets the slot empty.

    async def _open(self, index: int) -> _Connection:
        if self._closed:
            raise ConnectFailed("the Redis connection pool is closed")
        task = self._opening[index]
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect(), name="redis-connect")
            self._opening[index] = task
            task.add_done_callback(lambda done: self._opened(index, done))
        # Shielded: one caller giving up must not abort the connection the others are waiting for.
        return await asyncio.shield(task)

    def _opened(self, index: int, task: asyncio.Task[_Connection]) -> None:
        if self._opening[index] is task:
            self._opening[index] = None
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so a failure nobody awaited any more is not reported as lost
        if error is not None:
            return
        connection = task.result()
        if self._closed:
            connection.close()
            return
        previous = self._slots[index]
        if previous is not None and previous is not connection:
            previous.close()
        self._slots[index] = connection

    async def _connect(self) -> _Connection:
        address = self.address
        loop = asyncio.get_running_loop()
        where = address.location
        try:
            async with asyncio.timeout(self._connect_timeout):
                if address.path is not None:
                    _, connection = await loop.create_unix_connection(lambda: _Connection(self._timeout), address.path)
                elif address.host is not None:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self._timeout),
                        address.host,
                        address.port,
                        ssl=self._ssl,
                        server_hostname=address.host if self._ssl is not None else None,
                    )
                else:  # parse_redis_url never makes one
                    raise ConnectFailed("a Redis address needs a host or a socket path")
                try:
                    await self._handshake(connection)
                except BaseException:
                    connection.close()
                    raise
        except TimeoutError:
            raise ConnectFailed(f"connecting to Redis at {where} timed out") from None
        except OSError as error:  # refused, unreachable, unresolvable, TLS failures (ssl.SSLError)
            raise ConnectFailed(f"cannot connect to Redis at {where}: {type(error).__name__}") from None
        except ConnectFailed:
            raise
        except RespError as error:
            raise ConnectFailed(f"Redis at {where} refused the connection's setup: {error}") from None
        return connection

    async def _handshake(self, connection: _Connection) -> None:
        address = self.address
        if address.password is not None or address.username is not None:
            credentials: tuple[str, ...] = (address.password or "",)
            if address.username is not None:
                credentials = (address.username, *credentials)
            try:
                await connection.send(_pack(("AUTH", *credentials)))
            except ServerError as error:
                # The server's text is about the credentials, never contains them; its code is enough.
                raise ConnectFailed(f"Redis at {address.location} refused the credentials ({error.code})") from None
        if address.db:
            await connection.send(_pack(("SELECT", address.db)))


_Waiter = tuple["asyncio.Future[Reply]", float]  # (the reply's future, the loop time by which it must arrive)


class _Connection(asyncio.Protocol):
    """One transport, its hiredis reader and the queue of commands waiting for replies, oldest first."""

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader()
        self._waiters: deque[_Waiter] = deque()
        self._outgoing: list[bytes] = []  # commands queued in this pass of the loop, written by _flush
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False

    def usable(self) -> bool:
        return not self._lost and self._transport is not None and not self._transport.is_closing()

    def send(self, payload: bytes) -> asyncio.Future[Reply]:
        """Queues `payload` (one packed command) for this pass's write and returns the future of its reply."""
        loop = self._loop
        future: asyncio.Future[Reply] = loop.create_future()
        if not self.usable():
            future.set_exception(ConnectionLost("the Redis connection is closed"))
            return future
        waiters = self._waiters
        waiters.append((future, loop.time() + self._timeout))
        if self._timer is None:
            self._timer = loop.call_at(waiters[0][1], self._check_timeout)
        outgoing = self._outgoing
        outgoing.append(payload)
        if len(outgoing) == 1:
            loop.call_soon(self._flush)
        return future

    def close(self) -> None:
        self._fail(ConnectionLost("the Redis connection was closed"))

    def _flush(self) -> None:
        outgoing = self._outgoing
        if not outgoing:
            return
        self._outgoing = []
        transport = self._transport
        if transport is None or self._lost:
            return  # the waiters were failed when the connection was lost
        transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _check_timeout(self) -> None:
        self._timer = None
        waiters = self._waiters
        if not waiters:
            return
        deadline = waiters[0][1]
        if self._loop.time() >= deadline:
            self._fail(ReplyTimeout(f"Redis did not answer within {self._timeout:g} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_timeout)

    def _fail(self, error: RespError) -> None:
        """Closes the connection and fails every waiting command with `error`."""
        self._lost = True
        self._outgoing = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters = self._waiters
        while waiters:
            future, _ = waiters.popleft()
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiters = self._waiters
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError:
                self._fail(ProtocolFailure("Redis sent bytes that are not RESP"))
                return
            if reply is False:  # RESP2 has no boolean: False is hiredis's "not a whole reply yet"
                break
            if not waiters:
                self._fail(ProtocolFailure("Redis sent a reply to no command"))
                return
            future, _ = waiters.popleft()
            if future.done():
                continue  # its caller gave up (cancelled); the reply still had to be read to keep the order
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ServerError(str(reply)))
            else:
                future.set_result(cast(Reply, reply))

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost fails what is still waiting

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost or self._waiters:
            self._fail(ConnectionLost("Redis closed the connection"))
