"""What fault and shutdown tests check afterwards: which acknowledged requests reached the store (their audit events
and usage records) and whether the audit chain verifies; and the own redis-server they stop and start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from chamberlain.audit.checkpoints import public_keys
from chamberlain.audit.events import Action
from chamberlain.audit.reader import read_events
from chamberlain.audit.verify import verify_tenant
from chamberlain.settings import load_settings
from chamberlain.store.database import create_database
from chamberlain.store.schema import usage_records


@dataclass(frozen=True)
class Stored:
    audited: set[str]  # request ids with an mcp.request event
    metered: set[str]  # request ids with a usage record
    problem: str | None  # the audit chain's first problem; None when it verifies


async def stored(data_dir: Path) -> Stored:
    """What the default tenant's store holds, read after the gateway of `data_dir` stopped."""
    settings = load_settings(data_dir=data_dir, environ={})
    database = create_database(settings.effective_database_url)
    try:
        events = await read_events(database, settings.tenant, limit=1_000_000)
        audited = {str(event.public["request_id"]) for event in events if event.action == Action.MCP_REQUEST}
        async with database.connect() as connection:
            metered = {str(row) for row in await connection.scalars(select(usage_records.c.request_id))}
        verification = await verify_tenant(database, settings.tenant, await public_keys(database), workers=1)
    finally:
        await database.dispose()
    return Stored(audited, metered, verification.problem.message if verification.problem is not None else None)
