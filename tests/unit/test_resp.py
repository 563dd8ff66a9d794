"""The lean pipelined Redis client (net/resp.py) against `FakeRedis`, a scripted RESP server on 127.0.0.1 (or a Unix
socket) whose every command is recorded and answered by a function the test gives: replies in order, late, never,
split into pieces, garbled, or with the connection closed. The rate limiter's tests run it against the real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chamberlain.net.resp import (
    ConnectFailed,
    ConnectionLost,
    ProtocolFailure,
    RedisAddress,
    RedisPool,
    Reply,
    ReplyTimeout,
    ServerError,
    bulk,
    pack,
    parse_redis_url,
)
from tests.support.server import free_port

CLOSE = object()  # an answer that closes the connection instead of replying


def encode(value: Reply | ServerError) -> bytes:
    """A reply in RESP2, as Redis writes it."""
    if isinstance(value, ServerError):
        return b"-%s\r\n" % str(value).encode()
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return bulk(value)
    return b"*%d\r\n" % len(value) + b"".join(encode(item) for item in value)


Answer = Callable[[list[bytes]], Awaitable[bytes | object | None]]


async def standard(command: list[bytes]) -> bytes | object | None:
    """PING, ECHO, AUTH, SELECT as Redis answers them; SLOW answers after a while; CLOSE closes; anything else errs.
    (HANG, which stalls the connection until the server stops, is FakeRedis's own.)"""
    name = command[0].upper()
    if name == b"PING":
        return b"+PONG\r\n"
    if name == b"ECHO":
        return encode(command[1])
    if name in (b"AUTH", b"SELECT"):
        return b"+OK\r\n"
    if name == b"SLOW":
        await asyncio.sleep(float(command[1]))
        return encode(command[2])
    if name == b"CLOSE":
        return CLOSE
    return encode(ServerError(f"ERR unknown command '{command[0].decode()}'"))


class FakeRedis:
    def __init__(self, answer: Answer = standard) -> None:
        self.answer = answer
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.reads = 0  # segments received: fewer than commands when the client writes several at once
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.port = 0
        self.path: Path | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}" if self.path is not None else f"redis://127.0.0.1:{self.port}/0"

    async def start(self, path: Path | None = None) -> None:
        if path is not None:
            self.path = path
            self._server = await asyncio.start_unix_server(self._serve, str(path))
        else:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._stopping.set()
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65_536):
                self.reads += 1
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.commands.append(command)
                    if command[0] == b"HANG":  # the server stalls: nothing more on this connection is answered
                        await self._stopping.wait()
                        return
                    reply = await self.answer(command)
                    if reply is CLOSE:
                        return
                    if isinstance(reply, bytes):
                        writer.write(reply)
        except (ConnectionError, hiredis.ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.close()


@contextlib.asynccontextmanager
async def fake_redis(answer: Answer = standard, path: Path | None = None) -> AsyncIterator[FakeRedis]:
    server = FakeRedis(answer)
    await server.start(path)
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def pool_for(url: str, **options: float) -> AsyncIterator[RedisPool]:
    pool = RedisPool(url, **options)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        await pool.aclose()


# -- URLs -------------------------------------------------------------------------------------------------------------


def test_redis_urls_are_parsed_into_address_credentials_and_database() -> None:
    assert parse_redis_url("redis://127.0.0.1:6380/3") == RedisAddress("127.0.0.1", 6380, None, False, 3)
    plain = parse_redis_url("redis://cache.internal")
    assert (plain.host, plain.port, plain.db, plain.tls) == ("cache.internal", 6379, 0, False)
    secure = parse_redis_url("rediss://app:s%40cret@[::1]:6390/2")
    assert (secure.host, secure.port, secure.tls, secure.db) == ("::1", 6390, True, 2)
    assert (secure.username, secure.password) == ("app", "s@cret")
    assert secure.location == "[::1]:6390"
    only_password = parse_redis_url("redis://:hunter2@127.0.0.1/0")
    assert (only_password.username, only_password.password) == (None, "hunter2")
    unix = parse_redis_url("unix://:pw@/run/redis/redis.sock?db=4")
    assert (unix.path, unix.host, unix.db, unix.password) == ("/run/redis/redis.sock", None, 4, "pw")
    assert unix.location == "unix:/run/redis/redis.sock"


def test_the_password_stays_out_of_reprs_and_locations() -> None:
    address = parse_redis_url("redis://admin:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in repr(address)
    assert "hunter2" not in address.location


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379/0", "redis://"),
        ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "ssl_cert_reqs"),
        ("redis://127.0.0.1:6379/zero", "number"),
        ("redis://127.0.0.1:6379/1?db=2", "once"),
        ("redis://:hunter2@127.0.0.1:99999/0", "port"),
        ("redis:///0", "host"),
        ("unix://", "path"),
    ],
)
def test_unusable_redis_urls_are_refused_without_echoing_them(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_redis_url(url)
    assert "hunter2" not in str(refused.value)


def test_packed_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert pack(b"SET", "k", 5, 1.5) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    assert bulk(b"") == b"$0\r\n\r\n"


# -- commands and replies ---------------------------------------------------------------------------------------------


async def test_replies_of_every_type_reach_their_caller() -> None:
    replies: dict[bytes, Reply | ServerError] = {
        b"INT": 42,
        b"BULK": b"value\r\nwith a line break",
        b"NIL": None,
        b"ARRAY": [1, b"two", None, [3, b""]],
        b"ERROR": ServerError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    }

    async def answer(command: list[bytes]) -> bytes:
        return encode(replies[command[0]])

    async with fake_redis(answer) as server, pool_for(server.url) as pool:
        for name, expected in replies.items():
            if isinstance(expected, ServerError):
                with pytest.raises(ServerError) as refused:
                    await pool.execute(name)
                assert refused.value.code == "WRONGTYPE"
            else:
                assert await pool.execute(name) == expected
        # An error reply leaves the connection usable.
        assert await pool.execute(b"INT") == 42
        assert server.connections == 1


async def test_many_concurrent_commands_share_one_connection_and_each_gets_its_own_reply() -> None:
    async with fake_redis() as server, pool_for(server.url, connections=1) as pool:
        values = [b"value-%d" % number for number in range(500)]
        replies = await asyncio.gather(*(pool.execute(b"ECHO", value) for value in values))
        assert replies == values
        assert server.connections == 1
        # Commands issued in one pass of the event loop go out together: far fewer segments than commands.
        assert server.reads < len(values) / 10


async def test_commands_are_spread_over_the_pool_s_connections() -> None:
    async with fake_redis() as server, pool_for(server.url, connections=3) as pool:
        values = [b"%d" % number for number in range(60)]
        assert await asyncio.gather(*(pool.execute(b"ECHO", value) for value in values)) == values
        assert server.connections == 3


async def test_a_cancelled_command_s_reply_is_dropped_and_the_next_gets_its_own() -> None:
    async with fake_redis() as server, pool_for(server.url, connections=1) as pool:
        slow = asyncio.create_task(pool.execute(b"SLOW", b"0.2", b"for the cancelled caller"))
        await asyncio.sleep(0.05)
        following = asyncio.create_task(pool.execute(b"ECHO", b"mine"))
        await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await following == b"mine"
        assert await pool.execute(b"ECHO", b"after") == b"after"
        assert server.connections == 1


async def test_an_unanswered_command_times_out_fails_its_connection_and_the_next_reconnects() -> None:
    async with fake_redis() as server, pool_for(server.url, connections=1, timeout=0.2) as pool:
        started = asyncio.get_running_loop().time()
        hanging = asyncio.create_task(pool.execute(b"HANG"))
        behind = asyncio.create_task(pool.execute(b"ECHO", b"queued behind it"))  # answered, but after HANG
        with pytest.raises(ReplyTimeout):
            await hanging
        assert 0.15 <= asyncio.get_running_loop().time() - started < 1.5
        # The connection is gone, and with it everything queued on it: its replies can no longer be matched.
        with pytest.raises((ReplyTimeout, ConnectionLost)):
            await behind
        assert await pool.execute(b"ECHO", b"fresh") == b"fresh"
        assert server.connections == 2


async def test_a_connection_closed_by_the_server_fails_what_waits_and_the_next_command_reconnects() -> None:
    async with fake_redis() as server, pool_for(server.url, connections=1) as pool:
        assert await pool.execute(b"PING") == b"PONG"
        # Both go out in one segment; the server closes the connection on the first and never reads the second.
        closing = asyncio.create_task(pool.execute(b"CLOSE"))
        behind = asyncio.create_task(pool.execute(b"ECHO", b"never answered"))
        for waiter in (closing, behind):
            with pytest.raises(ConnectionLost):
                await waiter
        assert await pool.execute(b"PING") == b"PONG"
        assert server.connections == 2


@pytest.mark.parametrize(
    ("garbage", "reason"), [(b"x\r\n", "not RESP"), (b":1\r\n:2\r\n", "no command")], ids=["garbled", "unsolicited"]
)
async def test_bytes_that_are_not_replies_close_the_connection(garbage: bytes, reason: str) -> None:
    async def answer(command: list[bytes]) -> bytes:
        return garbage if command[0] == b"BAD" else b"+PONG\r\n"

    async with fake_redis(answer) as server, pool_for(server.url, connections=1) as pool:
        if reason == "no command":
            # The first reply answers BAD; the second answers nothing anyone sent.
            with contextlib.suppress(ProtocolFailure):
                assert await pool.execute(b"BAD") == 1
            await asyncio.sleep(0.05)
            assert await pool.execute(b"PING") == b"PONG"
            assert server.connections == 2
        else:
            with pytest.raises(ProtocolFailure, match=reason):
                await pool.execute(b"BAD")
            assert await pool.execute(b"PING") == b"PONG"
            assert server.connections == 2


async def test_credentials_and_database_are_sent_once_per_connection() -> None:
    async with fake_redis() as server:
        port = server.port
        async with pool_for(f"redis://app:s%40cret@127.0.0.1:{port}/5") as pool:
            assert await pool.execute(b"PING") == b"PONG"
            assert await pool.execute(b"PING") == b"PONG"
        assert server.commands[:2] == [[b"AUTH", b"app", b"s@cret"], [b"SELECT", b"5"]]
        assert [command[0] for command in server.commands[2:]] == [b"PING", b"PING"]
        server.commands.clear()
        async with pool_for(f"redis://:only-password@127.0.0.1:{port}") as pool:
            assert await pool.execute(b"PING") == b"PONG"
        assert server.commands == [[b"AUTH", b"only-password"], [b"PING"]]


async def test_refused_credentials_fail_the_connection_without_naming_them() -> None:
    async def answer(command: list[bytes]) -> bytes:
        if command[0] == b"AUTH":
            return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        return b"+PONG\r\n"

    async with fake_redis(answer) as server, pool_for(f"redis://:hunter2@127.0.0.1:{server.port}/0") as pool:
        with pytest.raises(ConnectFailed) as refused:
            await pool.execute(b"PING")
        assert "WRONGPASS" in str(refused.value)
        assert "hunter2" not in str(refused.value)
        assert f"127.0.0.1:{server.port}" in str(refused.value)


async def test_a_closed_port_fails_fast_naming_only_the_location() -> None:
    async with pool_for(f"redis://:hunter2@127.0.0.1:{free_port()}/0", connect_timeout=2) as pool:
        with pytest.raises(ConnectFailed) as refused:
            await pool.execute(b"PING")
        assert "127.0.0.1" in str(refused.value)
        assert "hunter2" not in str(refused.value)


async def test_a_server_that_accepts_but_never_answers_the_handshake_times_out() -> None:
    async def answer(command: list[bytes]) -> None:
        return None

    async with (
        fake_redis(answer) as server,
        pool_for(f"redis://:pw@127.0.0.1:{server.port}/0", connect_timeout=0.2) as pool,
    ):
        with pytest.raises(ConnectFailed, match="timed out"):
            await pool.execute(b"PING")


async def test_concurrent_callers_share_one_connection_attempt() -> None:
    async with fake_redis() as server, pool_for(server.url, connections=1) as pool:
        assert await asyncio.gather(*(pool.execute(b"ECHO", b"x") for _ in range(50))) == [b"x"] * 50
        assert server.connections == 1


async def test_a_unix_socket_url_connects(tmp_path: Path) -> None:
    async with fake_redis(path=tmp_path / "redis.sock") as server, pool_for(server.url) as pool:
        assert await pool.execute(b"ECHO", b"over a socket") == b"over a socket"


async def test_a_closed_pool_fails_what_waits_and_refuses_what_comes() -> None:
    async with fake_redis() as server:
        pool = RedisPool(server.url)
        waiting = asyncio.create_task(pool.execute(b"HANG"))
        await asyncio.sleep(0.05)
        await pool.aclose()
        with pytest.raises(ConnectionLost):
            await waiting
        with pytest.raises(ConnectFailed):
            await pool.execute(b"PING")


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="connections"):
        RedisPool("redis://127.0.0.1:6379/0", connections=0)
    import ssl

    with pytest.raises(ValueError, match="rediss://"):
        RedisPool("redis://127.0.0.1:6379/0", ssl_context=ssl.create_default_context())


# -- property: whatever the replies and however the bytes are cut, every caller gets its own reply --------------------

replies = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(replies, min_size=1, max_size=25),
    cuts=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=10),
)
def test_replies_split_anywhere_reach_their_callers_in_order(values: list[Reply], cuts: list[int]) -> None:
    async def scenario() -> None:
        pending: list[bytes] = []

        async def answer(command: list[bytes]) -> bytes | None:
            # Hold the replies back, then send them all at once in pieces of the given sizes.
            pending.append(encode(values[int(command[1])]))
            if len(pending) < len(values):
                return None
            stream = b"".join(pending)
            pieces: list[bytes] = []
            position, turn = 0, 0
            while position < len(stream):
                size = cuts[turn % len(cuts)]
                pieces.append(stream[position : position + size])
                position += size
                turn += 1
            for piece in pieces:
                writer = next(iter(server._writers))
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            return None

        async with fake_redis(answer) as server, pool_for(server.url, connections=1) as pool:
            got = await asyncio.gather(*(pool.execute(b"GET", number) for number in range(len(values))))
            assert got == values

    asyncio.run(scenario())
