"""A running Chamberlain whose LLM proxy sends to the Anthropic stand-in, with an API key in its vault."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from chamberlain.store.schema import usage_records
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.settings import CredentialKind
from tests.support.anthropic_upstream import AnthropicUpstream, running_anthropic_upstream
from tests.support.gateway import vault_of
from tests.support.server import RunningServer, running_server

UPSTREAM_KEY = "sk-ant-api03-stand-in-key-for-tests-only"  # what the stand-in must receive as x-api-key
TEAM_KEY = "sk-ant-api03-stand-in-key-of-the-platform-team"
ROLES = {
    "enterprise_roles": {
        "admin": {"mcp_servers": "*", "data_classification_access": "*", "administrative_functions": True},
        "developer": {
            "mcp_servers": ["demo"],
            "data_classification_access": ["public", "internal"],
            "models": ["claude-sonnet-4-*", "claude-haiku-4-*"],
        },
        "intern": {"mcp_servers": ["demo"], "models": ["claude-haiku-4-*"]},
        "platform": {"mcp_servers": ["demo"], "models": "*"},
    }
}


@dataclass
class LlmGateway:
    server: RunningServer
    upstream: AnthropicUpstream

    @property
    def resource(self) -> str:
        return f"{self.server.base_url}/llm"


def llm_settings(upstream: AnthropicUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "upstream_url": f"http://127.0.0.1:{upstream.port}",
        "keys": {"main": "anthropic/main", "platform": "anthropic/platform"},
        "default_key": "main",
        "teams": {"platform-team": ["platform"]},
        "team_keys": {"platform-team": "platform"},
        **extra,
    }


@contextlib.contextmanager
def llm_gateway(data_dir: Path, database_url: str | None = None, **settings: Any) -> Iterator[LlmGateway]:
    """The gateway and its stand-in upstream; `settings` go to the gateway. `llm`, and each tenant's `llm` under
    `tenants`, are merged over llm_settings; tenants get ROLES unless they set roles."""
    with running_anthropic_upstream() as upstream:
        llm = llm_settings(upstream, **settings.pop("llm", {}))
        tenants = {
            tenant: {"roles": ROLES, **config, "llm": llm_settings(upstream, **config.get("llm", {}))}
            for tenant, config in settings.pop("tenants", {}).items()
        }
        roles = settings.pop("roles", ROLES)
        with running_server(data_dir, database_url, llm=llm, roles=roles, tenants=tenants, **settings) as server:
            yield LlmGateway(server, upstream)


async def store_api_keys(server: RunningServer, tenant: str | None = None) -> None:
    tenant = tenant or server.settings.tenant
    async with vault_of(server) as vault:
        for name, value in (("main", UPSTREAM_KEY), ("platform", TEAM_KEY)):
            await vault.store(SecretRef(tenant, "anthropic", name), value.encode(), kind=CredentialKind.API_KEY,
                              bindings=("llm",))  # fmt: skip


def wait_until(condition: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def new_request_id() -> str:
    """An X-Request-Id the gateway keeps (a plain token), to find what one request caused."""
    return f"llm-test-{secrets.token_hex(8)}"


async def usage_of(server: RunningServer, request_id: str, within: float = 10.0) -> dict[str, Any]:
    """The usage record of one request, once the recorder has written it."""
    deadline = time.monotonic() + within
    async with server.engine() as database:
        while True:
            async with database.connect() as connection:
                rows = (
                    (await connection.execute(select(usage_records).where(usage_records.c.request_id == request_id)))
                    .mappings()
                    .all()
                )
            if rows:
                assert len(rows) == 1, rows
                return dict(rows[0])
            assert time.monotonic() < deadline, f"no usage record for {request_id}"
            await asyncio.sleep(0.05)
