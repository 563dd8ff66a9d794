"""Several `chamberlain serve` processes on one data directory and one PostgreSQL database, as replicas behind a load
balancer run: separate OS processes, each with its own event loop, caches and refresher.

Usage (a sync test):

    require_postgres()
    with postgres_database() as database_url:
        prepare_store(tmp_path, database_url, config={"issuer": issuer, "redis_url": REDIS_URL})
        with replicas(tmp_path, ports) as base_urls:
            tokens = asyncio.run(user_tokens(base_urls[0], f"{issuer}/mcp/demo"))

Every replica must serve one public issuer (`config["issuer"]`, a load balancer's URL in production), so a token
issued by one is good at the others. The children read chamberlain.yaml in the data dir and no CHAMBERLAIN_*
variable of ours, except what `env` passes explicitly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from chamberlain.audit.log import AuditLog
from chamberlain.crypto.master_key import load_master_key
from chamberlain.identity.passwords import hash_password
from chamberlain.settings import load_settings
from chamberlain.store.database import create_database
from chamberlain.store.users import UserRepository
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import load_kek_ring
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import CredentialKind
from tests.conftest import require_postgres  # re-exported: skips, or fails under CI=true, without PostgreSQL
from tests.support.browser import Browser
from tests.support.mcp_calls import MCP_HEADERS
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.server import USER, USER_PASSWORD

CONFIG_FILE = "chamberlain.yaml"
START_TIMEOUT = 60.0  # seconds for a child to accept connections (migrations ran before, in prepare_store)
STOP_TIMEOUT = 15.0  # seconds after SIGTERM before SIGKILL

T = TypeVar("T")

__all__ = [
    "call_tool",
    "chamberlain_executable",
    "child_environment",
    "gateway_process",
    "prepare_store",
    "replicas",
    "require_postgres",
    "run_sync",
    "spawned_gateway",
    "stop_process",
    "store_llm_api_keys",
    "user_token",
    "user_tokens",
    "wait_until_listening",
    "write_config",
]


def chamberlain_executable() -> str:
    """The `chamberlain` console script of the interpreter running the tests (the project's venv)."""
    return str(Path(sys.executable).parent / "chamberlain")


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without CHAMBERLAIN_* (the test's own settings must not leak in), plus `extra`."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CHAMBERLAIN_")}
    environment.update(extra or {})
    return environment


def write_config(data_dir: Path, config: Mapping[str, Any]) -> None:
    """Writes chamberlain.yaml in `data_dir`, merged over the one already there (later keys win)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_FILE
    current: dict[str, Any] = {}
    if path.exists():
        current = dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    path.write_text(yaml.safe_dump({**current, **config}), encoding="utf-8")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs `coroutine` to completion from sync code, also when the caller is itself inside an event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def prepare_store(
    data_dir: Path,
    database_url: str,
    *,
    config: Mapping[str, Any] | None = None,
    users: Sequence[tuple[str, str, tuple[str, ...]]] = ((USER, USER_PASSWORD, ("developer",)),),
) -> None:
    """Writes chamberlain.yaml (`config` plus `database_url`), runs `chamberlain init`'s work once (migrations,
    tenant, first signing key, the demo server) and adds `users` as (name, password, roles). Synchronous: call it
    before starting the replicas, which then find a ready store and never race each other at migrating it."""
    write_config(data_dir, {**(config or {}), "database_url": database_url})
    run_sync(_initialise(data_dir, users))


async def _initialise(data_dir: Path, users: Sequence[tuple[str, str, tuple[str, ...]]]) -> None:
    from chamberlain.cli.init import initialise

    settings = load_settings(data_dir=data_dir, environ={})
    await initialise(settings)
    database = create_database(settings.effective_database_url)
    try:
        repository = UserRepository(database, settings.tenant)
        for name, password, roles in users:
            await repository.add(name, hash_password(password), roles)
    finally:
        await database.dispose()


@contextlib.contextmanager
def gateway_process(
    data_dir: Path,
    port: int,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    arguments: Sequence[str] = (),
) -> Iterator[str]:
    """`chamberlain serve` on 127.0.0.1:`port` as a child process, its output in `log`; yields its base URL once it
    accepts connections, and stops it with SIGTERM (then SIGKILL after STOP_TIMEOUT) on exit."""
    with spawned_gateway(data_dir, port, log, env=env, arguments=arguments):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def spawned_gateway(
    data_dir: Path,
    port: int,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    arguments: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """gateway_process, yielding the child itself (its pid for CPU accounting, or to signal it)."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [chamberlain_executable(), "serve", "--data-dir", str(data_dir), "--port", str(port), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=child_environment(env),
        )
    try:
        wait_until_listening(process, port, log)
        yield process
    finally:
        stop_process(process)


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway on port {port} exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway on port {port} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def replicas(data_dir: Path, ports: Sequence[int], *, env: Mapping[str, str] | None = None) -> Iterator[list[str]]:
    """One gateway_process per port on the same data dir (logs gateway-PORT.log in it); yields their base URLs."""
    with contextlib.ExitStack() as processes:
        yield [
            processes.enter_context(gateway_process(data_dir, port, data_dir / f"gateway-{port}.log", env=env))
            for port in ports
        ]


async def user_tokens(
    base_url: str, resource: str, *, username: str = USER, password: str = USER_PASSWORD
) -> dict[str, Any]:
    """The token response of a full authorization code flow (PKCE, browser login) at `base_url` for `resource`,
    plus the registered `client_id` (needed to refresh or revoke)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(base_url) as browser:
            redirect = await browser.authorize(
                authorization_url(client_id, resource, pkce), username=username, password=password
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        return {**response.json(), "client_id": client_id}


async def user_token(base_url: str, resource: str) -> str:
    """Only the access token of user_tokens()."""
    return str((await user_tokens(base_url, resource))["access_token"])


async def call_tool(
    http: httpx.AsyncClient, token: str, request_id: int, *, server_name: str = "demo"
) -> httpx.Response:
    """A JSON-RPC tools/call of the demo server's `echo` tool at /mcp/{server_name}, with `token` as Bearer."""
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": f"call {request_id}"}},
    }
    return await http.post(
        f"/mcp/{server_name}", json=body, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
    )


def store_llm_api_keys(data_dir: Path, keys: Mapping[str, str]) -> None:
    """Stores Anthropic API keys (name -> value, as `llm.keys` references them: anthropic/NAME) in the default
    tenant's vault, as `chamberlain vault` does beside running replicas; they read it on their next vault read."""
    run_sync(_store_llm_api_keys(data_dir, keys))


async def _store_llm_api_keys(data_dir: Path, keys: Mapping[str, str]) -> None:
    settings = load_settings(data_dir=data_dir, environ={})
    database = create_database(settings.effective_database_url)
    master_key = load_master_key(settings.data_dir, environ={})
    log = AuditLog(database, master_key, settings.audit)
    await log.start()
    try:
        keks = load_kek_ring(settings.vault, data_dir=settings.data_dir, master_key=master_key)
        vault = Vault(database, EnvelopeBackend(database, keks), log, settings.vault)
        for name, value in keys.items():
            reference = SecretRef(settings.tenant, "anthropic", name)
            await vault.store(reference, value.encode(), kind=CredentialKind.API_KEY, bindings=("llm",))
    finally:
        await log.aclose()
        await database.dispose()
