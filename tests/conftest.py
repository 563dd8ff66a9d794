"""Shared fixtures. `server` runs once per database backend: every test that uses it runs on SQLite and on
PostgreSQL. PostgreSQL tests skip when it is unreachable, except under CI=true, where they must run.

The canary plugin (tests/support/canary.py, issue 6 acceptance 4) watches the whole run for the vault's canary secret
in logs, audit events, HTTP responses and CLI output, and fails the run if it appears anywhere it should not."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.canary import CanaryPlugin
from tests.support.server import RunningServer, postgres_database, postgres_reachable, running_server

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, before test modules are imported, so that it watches everything they create.
    if not config.pluginmanager.has_plugin("chamberlain-canary"):
        config.pluginmanager.register(CanaryPlugin(), "chamberlain-canary")


def require_postgres() -> None:
    if postgres_reachable():
        return
    if IN_CI:
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI but is not reachable")
    pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp(f"chamberlain-{request.param}")
    if request.param == "sqlite":
        with running_server(data_dir) as running:
            yield running
        return
    require_postgres()
    with postgres_database() as url, running_server(data_dir, url) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for `server` that does not follow redirects (tests inspect them)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, follow_redirects=False) as client:
        yield client
