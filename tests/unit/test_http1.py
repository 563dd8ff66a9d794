"""The lean HTTP/1.1 client (net/http1.py) against real servers on 127.0.0.1.

Well-behaved answers come from uvicorn running a tiny ASGI app; misbehaviour (garbage, early close, HTTP/1.0,
stalls, the keep-alive race) from `ScriptedServer`, a raw asyncio server whose every connection runs a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chamberlain.net.http1 import (
    BodyTooLarge,
    ConnectFailed,
    Http1Pool,
    ProtocolFailure,
    ResponseTimeout,
)
from tests.support.network import Route, start_tls_server

JSON = [(b"content-type", b"application/json")]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- uvicorn with a tiny ASGI app ------------------------------------------------------------------------------


class EchoApp:
    """/echo answers what it received; /close adds `Connection: close`; /sse sends one event, waits for
    `sse_release`, then sends another; /big/N answers N bytes. Every request's client port is recorded."""

    def __init__(self) -> None:
        self.client_ports: list[int] = []
        self.sse_release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.client_ports.append(scope["client"][1])
        path: str = scope["path"]
        if path == "/sse":
            await self._sse(send)
            return
        if path.startswith("/big/"):
            payload = b"x" * int(path.removeprefix("/big/"))
        else:
            headers = {name.decode(): value.decode() for name, value in scope["headers"]}
            payload = json.dumps({"method": scope["method"], "headers": headers, "body": body.decode()}).encode()
        extra = [(b"connection", b"close")] if path == "/close" else []
        await send({"type": "http.response.start", "status": 200, "headers": JSON + extra})
        await send({"type": "http.response.body", "body": payload})

    async def _sse(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        released = await asyncio.get_running_loop().run_in_executor(None, self.sse_release.wait, 10)
        assert released
        await send({"type": "http.response.body", "body": b"data: two\n\n"})


@contextlib.contextmanager
def uvicorn_thread(app: EchoApp) -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"http1-upstream-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[EchoApp, int]]:
    app = EchoApp()
    with uvicorn_thread(app) as port:
        yield app, port


@pytest.fixture
async def echo_pool(echo: tuple[EchoApp, int]) -> AsyncIterator[tuple[EchoApp, Http1Pool]]:
    app, port = echo
    app.client_ports.clear()
    app.sse_release.clear()
    pool = Http1Pool(f"http://127.0.0.1:{port}")
    try:
        yield app, pool
    finally:
        app.sse_release.set()
        await pool.aclose()


# --- a raw server that runs a script per connection ------------------------------------------------------------


class Peer:
    """The server's side of one connection."""

    def __init__(self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.number = number  # 0 for the first connection
        self.reader = reader
        self.writer = writer

    async def request(self) -> bytes | None:
        """The next request head (its body, by Content-Length, is read and dropped); None when the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await self.reader.readexactly(int(line.split(b":")[1]))
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def client_closed(self) -> bool:
        """Waits (5 s at most) for the client to close the connection."""
        with contextlib.suppress(ConnectionError):
            return await asyncio.wait_for(self.reader.read(), 5) == b""
        return True


Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self._request_arrived = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def wait_for_requests(self, count: int) -> None:
        while len(self.requests) < count:
            self._request_arrived.clear()
            await self._request_arrived.wait()

    def pool(self, **options: Any) -> Http1Pool:
        return Http1Pool(f"http://127.0.0.1:{self.port}", **options)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(self.connections, reader, writer)
        self.connections += 1
        original = peer.request

        async def recording_request() -> bytes | None:
            head = await original()
            if head is not None:
                self.requests.append(head)
                self._request_arrived.set()
            return head

        peer.request = recording_request  # type: ignore[method-assign]
        try:
            await self.script(peer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def answer_each(peer: Peer, response: bytes) -> None:
    while await peer.request() is not None:
        await peer.send(response)


async def get(pool: Http1Pool, path: str = "/", method: str = "GET", body: bytes = b"") -> bytes:
    response = await pool.request(method, path, [], body, timeout=5)
    return await response.read(1 << 20, timeout=5)


# --- keep-alive and connection reuse ---------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(echo_pool: tuple[EchoApp, Http1Pool]) -> None:
    app, pool = echo_pool
    for number in range(5):
        response = await pool.request("POST", "/echo", JSON, b'{"n": %d}' % number, timeout=5)
        assert response.status == 200
        assert (b"content-type", b"application/json") in response.headers
        echoed = json.loads(await response.read(10_000, timeout=5))
        assert echoed["body"] == f'{{"n": {number}}}'
        assert echoed["headers"]["host"] == f"127.0.0.1:{pool._port}"
        assert echoed["headers"]["content-length"] == str(len(echoed["body"]))
    assert len(app.client_ports) == 5
    assert len(set(app.client_ports)) == 1


async def test_connection_close_is_honoured(echo_pool: tuple[EchoApp, Http1Pool]) -> None:
    app, pool = echo_pool
    for _ in range(3):
        response = await pool.request("POST", "/close", JSON, b"{}", timeout=5)
        assert (b"connection", b"close") in response.headers
        await response.read(10_000, timeout=5)
    assert len(set(app.client_ports)) == 3


@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n"])
async def test_http_1_0_response_is_not_reused(connection: bytes) -> None:
    async def script(peer: Peer) -> None:
        await answer_each(peer, b"HTTP/1.0 200 OK\r\n%sContent-Length: 2\r\n\r\nok" % connection)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        assert await get(pool) == b"ok"
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert server.connections == 2


async def test_body_without_length_ends_with_the_connection() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await peer.send(b"the end")

    async with ScriptedServer(script) as server:
        pool = server.pool()
        assert await get(pool) == b"until the end"
        assert await get(pool) == b"until the end"
        await pool.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("method", "response"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
    ],
)
async def test_responses_without_a_body(method: str, response: bytes) -> None:
    async def script(peer: Peer) -> None:
        await answer_each(peer, response)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        for _ in range(2):
            received = await pool.request(method, "/", [], b"", timeout=5)
            assert await received.read(100, timeout=5) == b""
        await pool.aclose()
    assert b"content-length" not in server.requests[0].lower()  # RFC 9110 §8.6: no content, no length


async def test_interim_responses_are_skipped() -> None:
    async def script(peer: Peer) -> None:
        await answer_each(peer, b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        response = await pool.request("GET", "/", [], b"", timeout=5)
        assert response.status == 200
        assert response.headers == [(b"content-length", b"2")]
        assert await response.read(10, timeout=5) == b"ok"
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert server.connections == 1


async def test_trailer_fields_are_dropped() -> None:
    async def script(peer: Peer) -> None:
        await answer_each(
            peer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-trailer: 1\r\n\r\n"
        )

    async with ScriptedServer(script) as server:
        pool = server.pool()
        for _ in range(2):
            response = await pool.request("GET", "/", [], b"", timeout=5)
            assert await response.read(10, timeout=5) == b"ok"
            assert response.headers == [(b"transfer-encoding", b"chunked")]
        await pool.aclose()
    assert server.connections == 1


# --- stale connections and the keep-alive race -----------------------------------------------------------------


def keep_alive_race(peer: Peer) -> Awaitable[None]:
    """The first connection answers one request, then reads the next and hangs up without a byte: what the client
    sees when the server drops an idle connection just as a request goes out. Later connections answer."""
    if peer.number > 0:
        return answer_each(peer, OK)

    async def first() -> None:
        await peer.request()
        await peer.send(OK)
        await peer.request()

    return first()


async def test_idempotent_request_is_retried_once_on_a_fresh_connection() -> None:
    async with ScriptedServer(keep_alive_race) as server:
        pool = server.pool()
        assert await get(pool) == b"ok"
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_non_idempotent_request_is_not_retried() -> None:
    async with ScriptedServer(keep_alive_race) as server:
        pool = server.pool()
        assert await get(pool, method="POST", body=b"{}") == b"ok"
        with pytest.raises(ProtocolFailure):
            await get(pool, method="POST", body=b"{}")
        await pool.aclose()
    assert server.connections == 1  # the tool call may have run: it must not run twice


async def test_request_on_a_fresh_connection_is_not_retried() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()  # and hang up

    async with ScriptedServer(script) as server:
        pool = server.pool()
        with pytest.raises(ProtocolFailure):
            await get(pool)
        await pool.aclose()
    assert server.connections == 1


async def test_idle_connection_closed_by_the_server_is_not_used() -> None:
    closed = asyncio.Event()

    async def script(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(OK)  # keep-alive by default, then hang up anyway
            peer.writer.close()
            await peer.writer.wait_closed()
            closed.set()
            return
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        assert await get(pool, method="POST", body=b"{}") == b"ok"
        await closed.wait()
        await asyncio.sleep(0.05)  # lets the client's loop see the FIN
        assert await get(pool, method="POST", body=b"{}") == b"ok"  # would fail if sent on the dead connection
        await pool.aclose()
    assert server.connections == 2


async def test_connection_dying_on_its_way_to_a_waiter_is_replaced() -> None:
    async def script(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(OK)  # keep-alive by default, then hang up anyway
            return
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool(max_connections=1)
        first, second = (asyncio.create_task(get(pool, method="POST", body=b"{}")) for _ in range(2))
        assert await first == b"ok"
        assert await second == b"ok"  # a POST on the dead connection would have failed, unretried
        await pool.aclose()
    assert server.connections == 2


async def test_idle_connections_are_closed_after_idle_timeout() -> None:
    first_closed = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(OK)
        if await peer.client_closed():
            first_closed.set()

    async with ScriptedServer(script) as server:
        pool = server.pool(idle_timeout=0.05)
        assert await get(pool) == b"ok"
        await asyncio.wait_for(first_closed.wait(), 10)  # the pool closed the idle connection
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert server.connections == 2


# --- timeouts, errors and limits -------------------------------------------------------------------------------


async def test_response_timeout_closes_the_connection() -> None:
    client_closed: list[bool] = []

    async def script(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            client_closed.append(await peer.client_closed())  # never answers
            return
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        with pytest.raises(ResponseTimeout):
            await pool.request("GET", "/", [], b"", timeout=0.2)
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert client_closed == [True]
    assert server.connections == 2


async def test_stalled_body_times_out_and_the_connection_is_closed() -> None:
    async def script(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            await peer.client_closed()
            return
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        response = await pool.request("GET", "/", [], b"", timeout=5)
        with pytest.raises(ResponseTimeout):
            await response.read(100, timeout=0.2)
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"garbage\r\n\r\n", id="garbage"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", id="two-lengths"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            id="length-and-chunked",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", id="space-in-header-name"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", id="upgrade"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, id="endless-head"),
    ],
)
async def test_broken_responses_are_protocol_failures(answer: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer)
        await peer.client_closed()

    async with ScriptedServer(script) as server:
        pool = server.pool()
        with pytest.raises(ProtocolFailure):
            await get(pool)
        await pool.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", id="short-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n", id="unfinished-chunks"),
    ],
)
async def test_connection_closed_mid_body_is_a_protocol_failure(answer: bytes) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer)  # and hang up

    async with ScriptedServer(script) as server:
        pool = server.pool()
        response = await pool.request("GET", "/", [], b"", timeout=5)
        with pytest.raises(ProtocolFailure):
            await response.read(100, timeout=5)
        await pool.aclose()


async def test_bytes_after_the_response_make_the_connection_unusable() -> None:
    async def script(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
            await peer.client_closed()
            return
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        assert await get(pool) == b"ok"
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert server.connections == 2


async def test_body_over_the_limit(echo_pool: tuple[EchoApp, Http1Pool]) -> None:
    app, pool = echo_pool
    small = await pool.request("GET", "/big/100", [], b"", timeout=5)
    with pytest.raises(BodyTooLarge):
        await small.read(99, timeout=5)
    large = await pool.request("GET", "/big/3000000", [], b"", timeout=5)
    with pytest.raises(BodyTooLarge):
        await large.read(1_000_000, timeout=5)
    exact = await pool.request("GET", "/big/1000", [], b"", timeout=5)
    assert await exact.read(1000, timeout=5) == b"x" * 1000
    # The small body was all received: its connection stayed. The large one was cut off: its connection went.
    assert len(set(app.client_ports)) == 2


async def test_connect_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: refused
        pool = Http1Pool(f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectFailed):
            await pool.request("GET", "/", [], b"", timeout=5)
        await pool.aclose()


# --- streaming -------------------------------------------------------------------------------------------------


async def test_events_arrive_one_by_one(echo_pool: tuple[EchoApp, Http1Pool]) -> None:
    app, pool = echo_pool
    response = await pool.request("POST", "/sse", JSON, b"{}", timeout=5)
    assert (b"transfer-encoding", b"chunked") in response.headers
    chunks = response.chunks(idle_timeout=5)
    assert await anext(chunks) == b"data: one\n\n"  # the server sends the second event only after this
    app.sse_release.set()
    assert [chunk async for chunk in chunks] == [b"data: two\n\n"]
    assert await get(pool, "/echo")
    assert len(set(app.client_ports)) == 1  # fully read: the connection went back to the pool


async def test_idle_stream_times_out(echo_pool: tuple[EchoApp, Http1Pool]) -> None:
    _, pool = echo_pool
    response = await pool.request("POST", "/sse", JSON, b"{}", timeout=5)
    chunks = response.chunks(idle_timeout=0.2)
    assert await anext(chunks) == b"data: one\n\n"
    with pytest.raises(ResponseTimeout):
        await anext(chunks)


async def test_reading_pauses_while_the_stream_is_not_consumed() -> None:
    size = 32 << 20
    unsent_while_idle: list[int] = []
    consumer_idle, measured = asyncio.Event(), asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        peer.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"z" * size)
        await consumer_idle.wait()
        await asyncio.sleep(0.2)  # ample time for a client that keeps reading to drain everything
        unsent_while_idle.append(peer.writer.transport.get_write_buffer_size())
        measured.set()
        await peer.writer.drain()

    async with ScriptedServer(script) as server:
        pool = server.pool()
        response = await pool.request("GET", "/", [], b"", timeout=5)
        chunks = response.chunks(idle_timeout=5)
        received = len(await anext(chunks))
        consumer_idle.set()
        await measured.wait()
        async for chunk in chunks:
            received += len(chunk)
        await pool.aclose()
    assert received == size
    assert unsent_while_idle[0] > size // 2  # the client stopped reading at about 1 MB


# --- cancellation and the pool bound ---------------------------------------------------------------------------


async def test_cancelled_request_closes_its_connection() -> None:
    arrived = asyncio.Event()
    client_closed: list[bool] = []

    async def script(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            arrived.set()
            client_closed.append(await peer.client_closed())
            return
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        task = asyncio.create_task(pool.request("GET", "/", [], b"", timeout=5))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert client_closed == [True]
    assert server.connections == 2


async def test_cancelled_stream_closes_its_connection() -> None:
    client_closed: list[bool] = []

    async def script(peer: Peer) -> None:
        if peer.number == 0:
            await peer.request()
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            client_closed.append(await peer.client_closed())
            return
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        response = await pool.request("GET", "/", [], b"", timeout=5)
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in response.chunks(idle_timeout=None):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await get(pool) == b"ok"
        await pool.aclose()
    assert client_closed == [True]
    assert server.connections == 2


async def test_pool_never_opens_more_than_max_connections() -> None:
    gate = asyncio.Event()
    open_now = 0
    most_open = 0

    async def script(peer: Peer) -> None:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        try:
            if await peer.request() is not None:
                await gate.wait()
                await peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        finally:
            open_now -= 1

    async with ScriptedServer(script) as server:
        pool = server.pool(max_connections=2)
        # Two rounds: every answer closes its connection and hands the slot to a waiter; the count must stay exact.
        for round_number in range(2):
            gate = asyncio.Event()
            tasks = [asyncio.create_task(get(pool)) for _ in range(6)]
            await server.wait_for_requests(6 * round_number + 2)
            await asyncio.sleep(0.05)  # room for a third connection, if the pool were to open one
            assert server.connections == 6 * round_number + 2
            gate.set()
            assert await asyncio.gather(*tasks) == [b"ok"] * 6
        await pool.aclose()
    assert most_open == 2
    assert server.connections == 12


async def test_closing_the_pool_fails_requests_in_flight() -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.client_closed()

    async with ScriptedServer(script) as server:
        pool = server.pool(max_connections=1)
        in_flight = asyncio.create_task(pool.request("POST", "/", [], b"{}", timeout=30))
        waiting = asyncio.create_task(pool.request("POST", "/", [], b"{}", timeout=30))
        await server.wait_for_requests(1)
        await pool.aclose()
        with pytest.raises(ProtocolFailure):  # at once, not after the 30 s timeout
            await in_flight
        with pytest.raises(ConnectFailed):
            await waiting
        with pytest.raises(ConnectFailed):
            await pool.request("POST", "/", [], b"{}", timeout=30)


async def test_waiting_for_a_free_connection_counts_against_the_timeout() -> None:
    release = asyncio.Event()

    async def script(peer: Peer) -> None:
        while await peer.request() is not None:
            await release.wait()
            await peer.send(OK)

    async with ScriptedServer(script) as server:
        pool = server.pool(max_connections=1)
        busy = asyncio.create_task(get(pool))
        await server.wait_for_requests(1)
        with pytest.raises(ResponseTimeout):
            await pool.request("GET", "/", [], b"", timeout=0.1)
        release.set()
        assert await busy == b"ok"
        assert await get(pool) == b"ok"  # the slot the timed-out waiter gave up is still there
        await pool.aclose()
    assert server.connections == 1


# --- request smuggling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/", [(b"x-a", b"1\r\nx-injected: 1")]),
        ("GET", "/", [(b"x-a", b"1\nx-injected: 1")]),
        ("GET", "/", [(b"x-a", b"1\rx")]),
        ("GET", "/", [(b"x-a", b"1\x00")]),
        ("GET", "/", [(b"x-a\r\nx-injected", b"1")]),
        ("GET", "/", [(b"x a", b"1")]),
        ("GET", "/", [(b"", b"1")]),
        ("GET", "/", [(b"x-a:", b"1")]),
        ("GET", "/", [(b"Host", b"elsewhere.example")]),
        ("GET", "/", [(b"content-length", b"0")]),
        ("GET", "/", [(b"Transfer-Encoding", b"chunked")]),
        ("GET", "/", [(b"connection", b"close")]),
        ("GET", "/a b", []),
        ("GET", "/a\r\nx-injected: 1", []),
        ("GET", "http://elsewhere.example/", []),
        ("GET / HTTP/1.1\r\nx:", "/", []),
        ("", "/", []),
    ],
)
async def test_request_smuggling_is_refused_before_anything_is_sent(
    method: str, target: str, headers: list[tuple[bytes, bytes]]
) -> None:
    async def script(peer: Peer) -> None:
        await answer_each(peer, OK)

    async with ScriptedServer(script) as server:
        pool = server.pool()
        with pytest.raises(ValueError, match=r"header|method|target"):
            await pool.request(method, target, headers, b"", timeout=5)
        await pool.aclose()
    assert server.connections == 0


@given(before=st.binary(max_size=20), bad=st.sampled_from([b"\r", b"\n", b"\x00"]), after=st.binary(max_size=20))
async def test_any_value_with_cr_lf_or_nul_is_refused(before: bytes, bad: bytes, after: bytes) -> None:
    value = before + bad + after
    pool = Http1Pool("http://127.0.0.1:9")  # never reached: the refusal comes first
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        await pool.request("POST", "/", [(b"x-value", value)], b"{}", timeout=5)


def test_origin_must_be_a_bare_http_origin() -> None:
    for origin in ("ftp://127.0.0.1", "http://127.0.0.1/path", "http://user:pw@127.0.0.1", "http://", "127.0.0.1"):
        with pytest.raises(ValueError, match="origin"):
            Http1Pool(origin)


# --- TLS -------------------------------------------------------------------------------------------------------


async def test_tls_with_a_trusted_certificate(tmp_path: Path) -> None:
    server, certificate = await start_tls_server(tmp_path, "localhost")
    server.routes["/mcp"] = Route(body=b'{"ok": true}')
    try:
        pool = Http1Pool(f"https://localhost:{server.port}", ssl_context=ssl.create_default_context(cafile=certificate))
        response = await pool.request("POST", "/mcp", JSON, b"{}", timeout=5)
        assert response.status == 200
        assert await response.read(100, timeout=5) == b'{"ok": true}'
        await pool.aclose()
        assert server.request_headers[0]["host"] == f"localhost:{server.port}"

        untrusting = Http1Pool(f"https://localhost:{server.port}", ssl_context=ssl.create_default_context())
        with pytest.raises(ConnectFailed):
            await untrusting.request("POST", "/mcp", JSON, b"{}", timeout=5)
        await untrusting.aclose()
        assert server.hits["/mcp"] == 1
    finally:
        await server.stop()


# --- chunked bodies split anywhere reassemble (property) -------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(min_size=1, max_size=3000),
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20),
    write_sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=30),
    streamed=st.booleans(),
)
def test_chunked_bodies_reassemble_however_they_are_split(
    body: bytes, chunk_sizes: list[int], write_sizes: list[int], streamed: bool
) -> None:
    # A loop of its own in a thread: hypothesis drives a synchronous function, and the session loop must not change.
    outcome: list[bytes] = []
    thread = threading.Thread(
        target=lambda: outcome.append(asyncio.run(_chunked_round_trip(body, chunk_sizes, write_sizes, streamed)))
    )
    thread.start()
    thread.join(timeout=20)
    assert outcome == [body]


async def _chunked_round_trip(body: bytes, chunk_sizes: list[int], write_sizes: list[int], streamed: bool) -> bytes:
    encoded = bytearray(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    position, index = 0, 0
    while position < len(body):
        piece = body[position : position + chunk_sizes[index % len(chunk_sizes)]]
        encoded += b"%x\r\n%s\r\n" % (len(piece), piece)
        position += len(piece)
        index += 1
    encoded += b"0\r\n\r\n"

    async def script(peer: Peer) -> None:
        await peer.request()
        position, index = 0, 0
        while position < len(encoded):
            size = write_sizes[index % len(write_sizes)]
            await peer.send(bytes(encoded[position : position + size]))
            position += size
            index += 1
        await peer.client_closed()

    async with ScriptedServer(script) as server:
        pool = server.pool()
        response = await pool.request("GET", "/", [], b"", timeout=5)
        if streamed:
            received = b"".join([chunk async for chunk in response.chunks(idle_timeout=5)])
        else:
            received = await response.read(len(body), timeout=5)
        await pool.aclose()
        return received
