"""Reading a running gateway's audit events from its database, by the request that caused them."""

from __future__ import annotations

import asyncio

from chamberlain.audit.events import Action
from chamberlain.audit.reader import read_events
from chamberlain.audit.records import StoredEvent
from tests.support.server import RunningServer


async def events_of(gateway: RunningServer, request_id: str, tenant: str | None = None) -> list[StoredEvent]:
    async with gateway.engine() as database:
        found = await read_events(database, tenant or gateway.settings.tenant, limit=100_000)
    return [event for event in found if event.public["request_id"] == request_id]


async def recorded(
    gateway: RunningServer, request_id: str, action: Action, tenant: str | None = None
) -> list[StoredEvent]:
    """The request's events of `action`, waiting (up to 10 s) for the first: many are queued, not durable."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        found = [event for event in await events_of(gateway, request_id, tenant) if event.action == action]
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)
