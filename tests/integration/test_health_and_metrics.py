"""Health and metrics through the real HTTP stack: /healthz, /readyz with real outages, /metrics (issue 10).

Outages are real: the store (PostgreSQL) and Redis are reached through a loopback TCP relay that the test closes
(severing every connection, as a failed node or a network partition does) and reopens on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chamberlain.settings import SettingsError, load_settings
from tests.conftest import require_postgres
from tests.support.mcp_calls import call_mcp
from tests.support.redis import REDIS_HOST, REDIS_PORT, require_redis
from tests.support.server import RunningServer, free_port, postgres_database, running_server
from tests.support.tenants import access_token

METRICS_TOKEN = "metrics-scrape-token-0123456789abcdef"


class Relay:
    """Forwards connections from 127.0.0.1:`port` to 127.0.0.1:`target`, until `close` severs them all."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> Relay:
        if self._listener is not None:
            return self
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


async def readiness(server: RunningServer) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        return await http.get("/readyz")


async def eventually(server: RunningServer, status: int, within: float = 15.0) -> httpx.Response:
    """/readyz until it answers `status` (its report is reused for up to a second, and a pool recovers on use)."""
    deadline = time.monotonic() + within
    while True:
        response = await readiness(server)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition's samples by name and labels; parsing fails the test if the format is not Prometheus's."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def jwt_payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return payload


# -- liveness and readiness -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("plain")) as running:
        yield running


async def test_healthy_sqlite_store_is_ready_and_metrics_are_off_by_default(plain_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=plain_server.base_url, timeout=30) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"store": "ok", "migrations": "ok"}}
        # Off unless enabled: nothing is exposed to whoever reaches the port.
        metrics = await http.get("/metrics")
        assert metrics.status_code == 404
        assert "chamberlain_" not in metrics.text


@pytest.fixture
def store_behind_relay(tmp_path: Path) -> Iterator[tuple[RunningServer, Relay]]:
    require_postgres()
    relay = Relay(5432).open()
    try:
        with postgres_database() as url:
            relayed = url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{relay.port}/")
            with running_server(tmp_path, relayed) as running:
                yield running, relay
                relay.open()  # whatever happened, let the server shut down cleanly (its audit queue is written)
    finally:
        relay.close()


async def test_unreachable_store_makes_the_replica_unready_until_it_returns(
    store_behind_relay: tuple[RunningServer, Relay],
) -> None:
    server, relay = store_behind_relay
    assert (await eventually(server, 200)).json()["checks"] == {"store": "ok", "migrations": "ok"}

    relay.close()  # every pooled connection is severed and new ones are refused
    down = await eventually(server, 503)
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "not ready"
    assert body["checks"]["store"] != "ok"
    # Which dependency, never where it is or how to log in to it.
    assert str(relay.port) not in down.text
    assert "127.0.0.1" not in down.text
    assert "postgres" not in down.text.lower()
    # Liveness is not readiness: restarting the process would not bring the store back.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        assert (await http.get("/healthz")).status_code == 200

    relay.open()
    back = await eventually(server, 200)
    assert back.status_code == 200, back.text
    assert back.json()["checks"] == {"store": "ok", "migrations": "ok"}


@pytest.fixture
def redis_behind_relay(tmp_path: Path) -> Iterator[tuple[RunningServer, Relay]]:
    require_redis()
    assert REDIS_HOST == "127.0.0.1"
    relay = Relay(REDIS_PORT)  # not open yet: the port refuses connections
    try:
        with running_server(tmp_path, redis_url=f"redis://127.0.0.1:{relay.port}/0") as running:
            yield running, relay
    finally:
        relay.close()


async def test_unreachable_redis_makes_the_replica_unready_until_it_answers(
    redis_behind_relay: tuple[RunningServer, Relay],
) -> None:
    server, relay = redis_behind_relay
    down = await readiness(server)
    assert down.status_code == 503
    assert down.json()["checks"]["store"] == "ok"
    assert down.json()["checks"]["redis"] != "ok"
    assert str(relay.port) not in down.text

    relay.open()
    back = await eventually(server, 200)
    assert back.status_code == 200, back.text
    assert back.json()["checks"] == {"store": "ok", "migrations": "ok", "redis": "ok"}


# -- metrics ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = {"metrics": {"enabled": True, "bearer_token": METRICS_TOKEN}}
    with running_server(tmp_path_factory.mktemp("metrics"), **settings) as running:
        yield running


async def test_metrics_are_refused_without_the_bearer_token(metrics_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=metrics_server.base_url, timeout=30) as http:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-of-some-length"},
            {"Authorization": f"Bearer {METRICS_TOKEN[:-1]}"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
        ):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "chamberlain_" not in refused.text
        allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/plain; version=")


async def test_metrics_count_requests_decisions_and_tokens_without_identities(metrics_server: RunningServer) -> None:
    server = metrics_server
    authorized = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        before = scrape((await http.get("/metrics", headers=authorized)).text)
        token = await access_token(server, server.settings.tenant, server.user, server.resource())
        claims = jwt_payload(token)
        called = await call_mcp(http, token)
        assert called.status_code == 200, called.text
        # Paths a caller makes up: they must not become label values.
        assert (await http.get("/mcp/made-up-server-7f3a")).status_code == 404
        assert (await http.post("/t/made-up-tenant-7f3a/token")).status_code == 404
        assert (await http.get("/made-up-path-7f3a")).status_code == 404

        deadline = time.monotonic() + 10
        while True:  # decisions reach the metrics through the event bus, off the request path
            text = (await http.get("/metrics", headers=authorized)).text
            after = scrape(text)
            decisions = {"tenant": "default", "server": "demo", "decision": "allowed"}
            if sample(after, "chamberlain_gateway_decisions_total", **decisions) >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)

    tenant = server.settings.tenant
    assert sample(after, "chamberlain_gateway_decisions_total", **decisions) >= 1
    proxied = {"method": "POST", "route": "/mcp/{server}", "status": "200", "tenant": tenant}
    assert sample(after, "chamberlain_http_requests_total", **proxied) == (
        sample(before, "chamberlain_http_requests_total", **proxied) + 1
    )
    assert sample(after, "chamberlain_http_request_duration_seconds_count", method="POST", route="/mcp/{server}") >= 1
    assert sample(after, "chamberlain_tokens_issued_total", tenant=tenant) == (
        sample(before, "chamberlain_tokens_issued_total", tenant=tenant) + 1
    )
    made_up = {"method": "POST", "route": "/t/{tenant}/token", "status": "404", "tenant": "unknown"}
    assert sample(after, "chamberlain_http_requests_total", **made_up) == 1
    assert sample(after, "chamberlain_tokens_issued_total", tenant="unknown") == 0
    unmatched = {"method": "GET", "route": "unmatched", "status": "404", "tenant": tenant}
    assert sample(after, "chamberlain_http_requests_total", **unmatched) == 1

    # No identities, credentials or caller-chosen strings in the exposition.
    for secret in (token, claims["sub"], claims["client_id"], claims["jti"], server.user, METRICS_TOKEN):
        assert secret not in text
    assert "made-up" not in text


async def test_a_refused_token_request_is_not_counted_as_issued(metrics_server: RunningServer) -> None:
    authorized = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with httpx.AsyncClient(base_url=metrics_server.base_url, timeout=30) as http:
        before = scrape((await http.get("/metrics", headers=authorized)).text)
        refused = await http.post("/token", data={"grant_type": "authorization_code", "code": "forged"})
        assert refused.status_code in (400, 401)
        after = scrape((await http.get("/metrics", headers=authorized)).text)
    tenant = metrics_server.settings.tenant
    assert sample(after, "chamberlain_tokens_issued_total", tenant=tenant) == sample(
        before, "chamberlain_tokens_issued_total", tenant=tenant
    )
    refusal = {"method": "POST", "route": "/token", "status": str(refused.status_code), "tenant": tenant}
    assert sample(after, "chamberlain_http_requests_total", **refusal) >= 1


def test_a_short_metrics_token_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"metrics\.bearer_token") as refused:
        load_settings(data_dir=tmp_path, environ={"CHAMBERLAIN_METRICS__BEARER_TOKEN": "short-secret"})
    assert "short-secret" not in str(refused.value)
