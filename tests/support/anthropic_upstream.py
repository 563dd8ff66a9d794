"""A stand-in for the Anthropic Messages API on loopback: replays tests/fixtures/anthropic/, records what it received.

    python -m tests.support.anthropic_upstream --port 8089      # serves until interrupted (the LLM proxy bench)

`POST /v1/messages` answers `stream_tool_use.sse` when the body asks to stream, `message_tool_use.json` otherwise;
`POST /v1/messages/count_tokens` answers `count_tokens.json`. The requested model replaces the fixture's in the
answer, as the API names the model it served. Tests script the next answers (`AnthropicUpstream.script`): an error
status with its fixture and `retry-after`, a stream cut off (the connection dropped) after some events, a delay
between events. Every request is recorded (`received`: target, headers, body), and so is a client closing its
connection in the middle of a stream (`abandoned`): the proxy's cancellation, seen from the upstream's side.

A plain asyncio protocol with llhttp's parser (httptools) rather than a web framework: the bench measures the
gateways in front of it, so it must cost next to nothing per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic"
FIXTURE_MODELS = (b"claude-sonnet-4-5-20250929", b"claude-haiku-4-5-20251001")  # the ids written in the fixtures
_PLAIN_MODEL = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}")
_REASONS = {200: b"OK", 400: b"Bad Request", 429: b"Too Many Requests", 500: b"Internal Server Error",
            529: b"Site Overloaded"}  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """How to answer one request."""

    status: int = 200
    fixture: str | None = None  # None: by path and `stream`, as the module docstring says
    retry_after: str | None = None
    cut_after: int | None = None  # stream events sent before the connection is dropped
    event_delay: float = 0.0  # seconds between stream events
    delay: float = 0.0  # seconds before the answer begins
    content: bytes | None = None  # this body instead of a fixture's
    piece_size: int | None = None  # a stream written in pieces of this many bytes, cutting across events


@dataclass(frozen=True)
class Received:
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


@dataclass
class AnthropicUpstream:
    """The server's state, shared by its connections; scripted and inspected by tests (from another thread too)."""

    received: list[Received] = field(default_factory=list)
    abandoned: int = 0  # requests whose client closed the connection before the answer's end
    script: deque[Answer] = field(default_factory=deque)  # the next requests' answers, in order
    default: Answer = Answer()  # the answer when the script is empty
    port: int = 0
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _fixtures: dict[str, bytes] = field(default_factory=dict)

    def fixture(self, name: str) -> bytes:
        if name not in self._fixtures:
            self._fixtures[name] = (FIXTURES / name).read_bytes()
        return self._fixtures[name]

    def next_answer(self, target: str, body: bytes) -> tuple[Answer, bytes]:
        answer = self.script.popleft() if self.script else self.default
        name = answer.fixture
        if name is None:
            if target.startswith("/v1/messages/count_tokens"):
                name = "count_tokens.json"
            else:
                name = "stream_tool_use.sse" if b'"stream":true' in body.replace(b" ", b"") else "message_tool_use.json"
        content = answer.content if answer.content is not None else self.fixture(name)
        model = _requested_model(body)
        if model is not None:
            for written in FIXTURE_MODELS:
                content = content.replace(b'"model":"' + written + b'"', b'"model":"' + model + b'"')
        return answer, content

    def request_id(self) -> str:
        return f"req_standin{next(self._ids):012d}"

    def wait_for_abandoned(self, count: int = 1, within: float = 10.0) -> bool:
        deadline = time.monotonic() + within
        while self.abandoned < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def _requested_model(body: bytes) -> bytes | None:
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    encoded = model.encode() if isinstance(model, str) else b""
    return encoded if _PLAIN_MODEL.fullmatch(encoded) else None


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: AnthropicUpstream) -> None:
        self._upstream = upstream
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._lost = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        received = Received(self._url.decode("latin-1"), self._headers, b"".join(self._body))
        keep_alive = self._parser.should_keep_alive()
        self._reset()
        self._upstream.received.append(received)
        answer, content = self._upstream.next_answer(received.target, received.body)
        if answer.delay:
            asyncio.get_running_loop().call_later(answer.delay, self._answer, answer, content, keep_alive)
        else:
            self._answer(answer, content, keep_alive)

    def _answer(self, answer: Answer, content: bytes, keep_alive: bool) -> None:
        if self._lost:
            self._upstream.abandoned += 1  # the client went away while the answer was being made
            return
        if answer.status != 200 or not content.startswith(b"event:"):
            self._write_whole(answer, content, keep_alive)
        else:
            asyncio.get_running_loop().create_task(self._stream(answer, content, keep_alive))

    def _head(self, status: int, content_type: bytes, extra: list[bytes]) -> list[bytes]:
        lines = [
            b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Status")),
            b"content-type: " + content_type,
            b"request-id: " + self._upstream.request_id().encode(),
            *extra,
        ]
        return lines

    def _write_whole(self, answer: Answer, content: bytes, keep_alive: bool) -> None:
        extra = [b"content-length: %d" % len(content)]
        if answer.retry_after is not None:
            extra += [b"retry-after: " + answer.retry_after.encode(), b"x-should-retry: true"]
        if not keep_alive:
            extra.append(b"connection: close")
        head = self._head(answer.status, b"application/json", extra)
        assert self._transport is not None
        self._transport.write(b"\r\n".join(head) + b"\r\n\r\n" + content)
        if not keep_alive:
            self._transport.close()

    async def _stream(self, answer: Answer, content: bytes, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        head = self._head(200, b"text/event-stream; charset=utf-8", [b"cache-control: no-cache",
                          b"transfer-encoding: chunked"])  # fmt: skip
        transport.write(b"\r\n".join(head) + b"\r\n\r\n")
        events = [event + b"\n\n" for event in content.split(b"\n\n") if event.strip()]
        if answer.piece_size is not None:
            whole = b"".join(events)
            events = [whole[at : at + answer.piece_size] for at in range(0, len(whole), answer.piece_size)]
        for sent, event in enumerate(events):
            if answer.cut_after is not None and sent >= answer.cut_after:
                transport.abort()  # the connection drops without the stream's end
                return
            if answer.event_delay and sent:
                await asyncio.sleep(answer.event_delay)
            if self._lost or transport.is_closing():
                self._upstream.abandoned += 1
                return
            transport.write(b"%x\r\n%s\r\n" % (len(event), event))
        transport.write(b"0\r\n\r\n")
        if not keep_alive:
            transport.close()


async def serve(upstream: AnthropicUpstream, port: int = 0) -> asyncio.Server:
    server = await asyncio.get_running_loop().create_server(lambda: _Connection(upstream), "127.0.0.1", port)
    upstream.port = server.sockets[0].getsockname()[1]
    return server


@contextlib.contextmanager
def running_anthropic_upstream() -> Iterator[AnthropicUpstream]:
    """The stand-in on a free loopback port, in a thread of its own (its own event loop)."""
    upstream = AnthropicUpstream()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: asyncio.Server | None = None

    def run() -> None:
        nonlocal server
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(serve(upstream))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="anthropic-upstream", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the stand-in upstream did not start")
    try:
        yield upstream
    finally:

        async def stop() -> None:
            assert server is not None
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="the Anthropic Messages API stand-in, on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def forever() -> None:
        server = await serve(AnthropicUpstream(), args.port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(forever())


if __name__ == "__main__":
    main()
