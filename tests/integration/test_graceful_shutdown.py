"""Graceful shutdown (issue 10): at SIGTERM the replica drains (/readyz 503 at once), in-flight requests and streams
finish, and then everything queued (audit events, usage records) is written: a SIGTERM right after a burst loses
nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from pathlib import Path
from types import FrameType

import httpx

from chamberlain.observability.readiness import Readiness, drain_on_sigterm
from chamberlain.store.database import create_database
from tests.support.anthropic_upstream import Answer, running_anthropic_upstream
from tests.support.faults import stored
from tests.support.llm_gateway import ROLES, TEAM_KEY, UPSTREAM_KEY, llm_settings, wait_until
from tests.support.mcp_calls import MCP_HEADERS
from tests.support.replicas import prepare_store, run_sync, spawned_gateway, store_llm_api_keys, user_tokens
from tests.support.server import free_port

BURST = 60
STREAM = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "Hi"}],
}


class _Handler:
    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)


async def test_sigterm_makes_the_replica_unready_at_once_and_reaches_the_server_after_the_drain_delay() -> None:
    server = _Handler()  # stands for uvicorn's handler, which begins its graceful shutdown
    before = signal.signal(signal.SIGTERM, server)
    database = create_database("sqlite:///:memory:")
    try:
        readiness = Readiness(database)
        assert (await readiness.check()).checks["store"] == "ok"
        restore = drain_on_sigterm(readiness, delay=3600)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0)  # the handler runs in this (the main) thread
        assert readiness.draining
        assert (await readiness.check()).checks == {"shutdown": "draining"}
        assert server.received == []  # still serving, while the load balancer takes the replica out
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM: no more waiting
        await asyncio.sleep(0)
        assert server.received == [signal.SIGTERM]
        restore()
        assert signal.getsignal(signal.SIGTERM) is server
    finally:
        signal.signal(signal.SIGTERM, before)
        await database.dispose()


async def test_without_a_drain_delay_the_server_hears_sigterm_at_once() -> None:
    server = _Handler()
    before = signal.signal(signal.SIGTERM, server)
    database = create_database("sqlite:///:memory:")
    try:
        readiness = Readiness(database)
        restore = drain_on_sigterm(readiness)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0)
        assert readiness.draining
        assert server.received == [signal.SIGTERM]
        restore()
    finally:
        signal.signal(signal.SIGTERM, before)
        await database.dispose()


async def _stream(http: httpx.AsyncClient, token: str, request_id: str) -> tuple[int, bytes]:
    headers = {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01", "x-request-id": request_id}
    async with http.stream("POST", "/v1/messages", json=STREAM, headers=headers) as response:
        return response.status_code, await response.aread()


async def _under_way(upstream_received: list[object], before: int) -> None:
    # The stand-in records in its own thread: nothing to await but its list growing.
    while len(upstream_received) == before:  # noqa: ASYNC110 - until the stream is under way upstream
        await asyncio.sleep(0.01)


async def _burst_then_sigterm(
    base_url: str, process: subprocess.Popen[bytes], upstream_received: list[object]
) -> dict[str, object]:
    mcp = await user_tokens(base_url, f"{base_url}/mcp/demo")
    llm = await user_tokens(base_url, f"{base_url}/llm")
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

        async def tool(request_id: str) -> httpx.Response:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
            headers = {**MCP_HEADERS, "Authorization": f"Bearer {mcp['access_token']}", "X-Request-Id": request_id}
            return await http.post("/mcp/demo", json=body, headers=headers)

        stream_id = f"drain-stream-{secrets.token_hex(6)}"
        received = len(upstream_received)
        streaming = asyncio.create_task(_stream(http, llm["access_token"], stream_id))
        await _under_way(upstream_received, received)
        tool_ids = [f"drain-tool-{secrets.token_hex(6)}" for _ in range(BURST)]
        answers = await asyncio.gather(*(tool(request_id) for request_id in tool_ids))
        assert not streaming.done()
        process.send_signal(signal.SIGTERM)  # right after the burst: its audit events are still queued
        status, content = await streaming
        exit_code = await asyncio.to_thread(process.wait, 30)
    return {
        "tool_ids": tool_ids,
        "tool_statuses": [answer.status_code for answer in answers],
        "stream_id": stream_id,
        "stream": (status, content),
        "exit_code": exit_code,
    }


def test_a_sigterm_right_after_a_burst_finishes_the_stream_in_flight_and_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    with running_anthropic_upstream() as upstream:
        upstream.default = Answer(event_delay=0.3)  # a stream of 14 events: about four seconds
        config = {"llm": llm_settings(upstream), "roles": ROLES}
        prepare_store(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", config=config)
        store_llm_api_keys(tmp_path, {"main": UPSTREAM_KEY, "platform": TEAM_KEY})
        with spawned_gateway(tmp_path, (port := free_port()), log) as process:
            outcome = run_sync(_burst_then_sigterm(f"http://127.0.0.1:{port}", process, upstream.received))
    output = log.read_text(errors="replace")
    assert outcome["tool_statuses"] == [200] * BURST
    status, content = outcome["stream"]  # type: ignore[misc]
    assert status == 200
    assert b"event: message_stop" in content, content[-500:]  # the whole stream, not cut off by the shutdown
    assert "unwritten" not in output, output
    found = run_sync(stored(tmp_path))
    assert set(outcome["tool_ids"]) - found.audited == set()  # type: ignore[arg-type]
    assert outcome["stream_id"] in found.metered
    assert found.problem is None, found.problem


def test_with_a_drain_delay_a_sigterm_makes_readyz_answer_503_while_the_replica_still_serves(tmp_path: Path) -> None:
    prepare_store(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", config={"shutdown_drain_seconds": 2})
    port = free_port()
    with spawned_gateway(tmp_path, port, tmp_path / "gateway.log") as process:
        base_url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base_url}/readyz").status_code == 200
        process.send_signal(signal.SIGTERM)
        # The signal is handled at once; the replica keeps accepting for the drain delay meanwhile.
        wait_until(lambda: httpx.get(f"{base_url}/readyz").status_code == 503)
        answer = httpx.get(f"{base_url}/readyz")
        assert answer.json() == {"status": "not ready", "checks": {"shutdown": "draining"}}
        assert httpx.get(f"{base_url}/healthz").status_code == 200  # alive: only out of rotation
        process.wait(timeout=30)  # then uvicorn's graceful shutdown, and the process ends by itself


async def _stream_then_sigterm(base_url: str, process: subprocess.Popen[bytes], upstream_received: list[object]) -> str:
    llm = await user_tokens(base_url, f"{base_url}/llm")
    stream_id = f"cut-stream-{secrets.token_hex(6)}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        received = len(upstream_received)
        streaming = asyncio.create_task(_stream(http, llm["access_token"], stream_id))
        await _under_way(upstream_received, received)
        await asyncio.sleep(1.0)  # message_start, with the model and input tokens, has been relayed
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(httpx.HTTPError):  # cut off by the shutdown bound
            await streaming
        await asyncio.to_thread(process.wait, 30)
    return stream_id


def test_a_stream_cut_off_by_the_shutdown_bound_is_still_accounted(tmp_path: Path) -> None:
    # The upstream spent tokens on a stream the shutdown cut: its usage record is written all the same.
    with running_anthropic_upstream() as upstream:
        upstream.default = Answer(event_delay=0.5)  # about seven seconds of stream
        config = {"llm": llm_settings(upstream), "roles": ROLES, "shutdown_grace_seconds": 1}
        prepare_store(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", config=config)
        store_llm_api_keys(tmp_path, {"main": UPSTREAM_KEY, "platform": TEAM_KEY})
        port = free_port()
        with spawned_gateway(tmp_path, port, tmp_path / "gateway.log") as process:
            stream_id = run_sync(_stream_then_sigterm(f"http://127.0.0.1:{port}", process, upstream.received))
    found = run_sync(stored(tmp_path))
    assert stream_id in found.metered
    assert found.problem is None, found.problem
