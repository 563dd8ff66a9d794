"""A real Chamberlain server for tests: its own data dir and database, uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from chamberlain.app import create_app
from chamberlain.cli.init import initialise
from chamberlain.identity.passwords import hash_password
from chamberlain.net.ssrf import Resolver
from chamberlain.settings import Settings, load_settings
from chamberlain.state import AppState
from chamberlain.store.database import Database, create_database
from chamberlain.store.users import UserRepository
from tests.support.postgres import temporary_database

POSTGRES_ADMIN_URL = os.environ.get("CHAMBERLAIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

USER = "alice"
USER_PASSWORD = "correct horse battery staple"


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    admin_password: str
    app: Starlette
    user: str = USER
    user_password: str = USER_PASSWORD

    @property
    def database_url(self) -> str:
        return self.settings.effective_database_url

    def resource(self, server: str = "demo") -> str:
        return f"{self.base_url}/mcp/{server}"

    @property
    def state(self) -> AppState:
        """The running gateway's state (it runs in this process, on another thread's event loop)."""
        state: AppState = self.app.state.chamberlain
        return state

    @contextlib.asynccontextmanager
    async def engine(self) -> AsyncIterator[Database]:
        engine = create_database(self.database_url)
        try:
            yield engine
        finally:
            await engine.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database per server, dropped afterwards, so runs never see each other's rows."""
    name = f"chamberlain_{uuid.uuid4().hex[:12]}"
    with temporary_database(POSTGRES_ADMIN_URL, name):
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"


@contextlib.contextmanager
def running_server(
    data_dir: Path,
    database_url: str | None = None,
    *,
    resolver: Resolver | None = None,
    port: int | None = None,
    **settings_values: Any,
) -> Iterator[RunningServer]:
    """`port`: one chosen beforehand (an IdP started first must know our callback URL); else a free one."""
    port = port or free_port()
    overrides: dict[str, Any] = {"port": port, "database_url": database_url, **settings_values}
    settings = load_settings(data_dir=data_dir, overrides=overrides, environ={})
    admin_password = asyncio.run(_prepare(settings))
    app = create_app(settings, resolver=resolver)
    with serving(app, port, name="chamberlain", lifespan="on", timeout=30):
        yield RunningServer(f"http://127.0.0.1:{port}", settings, admin_password, app)


@contextlib.contextmanager
def serving(
    app: ASGIApp, port: int, *, name: str, lifespan: Literal["on", "off"] = "off", timeout: float = 15
) -> Iterator[None]:
    """Serves `app` on 127.0.0.1:`port` with uvicorn in a thread of its own until the block ends: the gateway
    itself, and the stand-ins tests start beside it (IdPs, authorization servers)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan=lifespan)
    )
    thread = threading.Thread(target=server.run, name=f"{name}-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start on port {port}")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def _prepare(settings: Settings) -> str:
    password = await initialise(settings)
    assert password is not None, "the data directory was already initialised"
    engine = create_database(settings.effective_database_url)
    try:
        await UserRepository(engine, settings.tenant).add(USER, hash_password(USER_PASSWORD), ("developer",))
    finally:
        await engine.dispose()
    return password


def random_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"
