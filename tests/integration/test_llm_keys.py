"""`chamberlain llm keys`: a virtual key created on the command line works at the LLM proxy until it is revoked, acts
for its user with the user's roles, and is never stored or listed in the clear."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from chamberlain.cli.main import app
from chamberlain.store.database import create_database, migrate
from chamberlain.store.llm_keys import llm_virtual_keys
from chamberlain.store.schema import metadata
from tests.support.llm_gateway import LlmGateway, llm_gateway, store_api_keys

runner = CliRunner()
REQUEST = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    with llm_gateway(tmp_path_factory.mktemp("llm-keys")) as running:
        yield running


async def cli(gateway: LlmGateway, *argv: str) -> Result:
    arguments = [*argv, "--data-dir", str(gateway.server.settings.data_dir)]
    return await asyncio.to_thread(runner.invoke, app, arguments, env={})


async def answer_with(http: httpx.AsyncClient, key: str, status: int) -> httpx.Response:
    """The gateways learn of new and revoked keys from their refresher, within a second or two."""
    for _ in range(100):
        response = await http.post("/v1/messages", json=REQUEST, headers={"x-api-key": key})
        if response.status_code == status:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {response.status_code}: {response.text}")


async def test_a_key_from_the_command_line_works_until_revoked(gateway: LlmGateway) -> None:
    await store_api_keys(gateway.server)
    created = await cli(gateway, "llm", "keys", "create", "alice", "--name", "ci job", "--expires-in-days", "30")
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("chk_")
    assert len(key) == 47
    async with httpx.AsyncClient(base_url=gateway.server.base_url, timeout=30) as http:
        await answer_with(http, key, 200)
        # alice is a developer: her key gets her models, and not the others.
        response = await http.post(
            "/v1/messages", json={**REQUEST, "model": "claude-opus-4-5"}, headers={"x-api-key": key}
        )
        assert response.status_code == 403
        listed = await cli(gateway, "llm", "keys", "list", "--user", "alice")
        assert listed.exit_code == 0, listed.output
        assert "ci job" in listed.output
        assert "active" in listed.output
        assert key not in listed.output
        assert key[4:12] not in listed.output
        async with gateway.server.engine() as database, database.connect() as connection:
            (stored,) = (await connection.execute(select(llm_virtual_keys))).mappings().all()
        assert key.encode() not in stored["digest"]
        assert len(stored["digest"]) == 32
        revoked = await cli(gateway, "llm", "keys", "revoke", stored["id"])
        assert revoked.exit_code == 0, revoked.output
        response = await answer_with(http, key, 401)
        assert response.json()["error"]["type"] == "authentication_error"
    again = await cli(gateway, "llm", "keys", "revoke", stored["id"])
    assert again.exit_code == 1
    unknown = await cli(gateway, "llm", "keys", "create", "nobody")
    assert unknown.exit_code == 1
    assert "no user 'nobody'" in unknown.output


async def test_the_migration_creates_what_the_table_declares(tmp_path: Path) -> None:
    database = create_database(f"sqlite:///{tmp_path / 'keys.db'}")
    try:
        await migrate(database)

        def differences(sync: Any) -> list[Any]:
            found = compare_metadata(MigrationContext.configure(sync), metadata)
            return [difference for difference in found if llm_virtual_keys.name in repr(difference)]

        assert await database.run_sync(differences) == []
    finally:
        await database.dispose()
