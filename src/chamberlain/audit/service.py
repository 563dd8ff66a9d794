"""The audit log as a running service: the writer, periodic signed checkpoints and retention, and the gateway's
decisions turned into audit events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from chamberlain.audit.checkpoints import AuditSigner, Checkpointer
from chamberlain.audit.events import Action, Actor, AuditEvent, Outcome
from chamberlain.audit.export.shipper import Shipper
from chamberlain.audit.log import AuditLog
from chamberlain.audit.reader import tenants_with_events
from chamberlain.audit.retention import purge_expired
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.gateway.events import GatewayEvent
from chamberlain.gateway.upstream_credentials import CredentialUse
from chamberlain.store.database import Database

logger = logging.getLogger(__name__)
RETENTION_INTERVAL = 3600.0  # seconds between retention runs
_OUTCOMES: dict[str, Outcome] = {"allowed": "success", "denied": "denied", "upstream_error": "error"}


class AuditService:
    def __init__(self, database: Database, master_key: MasterKey, settings: AuditSettings) -> None:
        self._database = database
        self._master_key = master_key
        self.settings = settings
        self.log = AuditLog(database, master_key, settings)
        self.mcp_requests_durable = settings.enabled and Action.MCP_REQUEST in settings.fail_closed
        self.checkpointer: Checkpointer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.shippers: list[Shipper] = []
        # A tenant's own retention for events no rule covers (its data protection compliance modes), if any.
        self.tenant_retention: Callable[[str], int | None] = lambda tenant: None

    async def start(self) -> None:
        await self.log.start()
        if not self.settings.enabled:
            return
        self.checkpointer = Checkpointer(
            self._database, await AuditSigner.load_or_create(self._database, self._master_key)
        )
        self._tasks = [
            asyncio.create_task(self.checkpointer.run_forever(self.settings.checkpoint_interval, self._tenants)),
            asyncio.create_task(self._retain_forever()),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for shipper in self.shippers:
            await shipper.aclose()
        await self.log.aclose()
        if self.checkpointer is not None:
            # Sign what this process wrote, so a tail cut off after shutdown is caught by verification.
            with contextlib.suppress(Exception):
                for tenant in await self._tenants():
                    await self.checkpointer.checkpoint(tenant)

    def gateway_decision(self, event: GatewayEvent) -> None:
        """EventBus subscriber: every MCP request the proxy allowed, denied or could not complete."""
        if self.mcp_requests_durable and event.decision == "allowed":
            return  # the proxy recorded it durably before sending it upstream
        self.log.record(_mcp_event(event))

    async def record_gateway_decision_durably(self, event: GatewayEvent) -> None:
        await self.log.record_durably(_mcp_event(event))

    def credential_use(self, tenant: str, server: str) -> CredentialUse:
        """What the upstream credentials of a tenant's `server` call before a stored secret is used
        (credential.read)."""

        async def record(grant_type: str) -> None:
            event = AuditEvent(
                action=Action.CREDENTIAL_READ,
                outcome="success",
                tenant=tenant,
                actor=Actor("service", "gateway"),
                target=f"upstream:{server}",
                details={"grant_type": grant_type},
            )
            # Fail-closed (credential.read by default): AuditUnavailable stops the use, and the proxy answers 503
            # as it does when a vault read cannot be recorded.
            await self.log.record_as_configured(event)

        return record

    async def _tenants(self) -> list[str]:
        return await tenants_with_events(self._database)

    async def _retain_forever(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_INTERVAL)
            if self.checkpointer is None:
                continue
            try:
                for tenant in await self._tenants():
                    settings = self.settings.retained_for(self.tenant_retention(tenant))
                    purge = await purge_expired(self._database, self.checkpointer, settings, tenant)
                    if purge.purged:
                        logger.info("audit retention purged %d events of tenant %s", purge.purged, tenant)
            except Exception:
                logger.exception("audit retention failed; it runs again in an hour")


def _mcp_event(event: GatewayEvent) -> AuditEvent:
    user_acted = event.subject != event.client_id  # a client-credentials token's subject is its client
    return AuditEvent(
        action=Action.MCP_REQUEST,
        outcome=_OUTCOMES[event.decision],
        tenant=event.tenant,
        actor=Actor("user" if user_acted else "client", event.subject),
        target=f"mcp:{event.server}" + (f"/{event.target}" if event.target else ""),
        reason=event.reason,
        request_id=event.request_id,
        details={"server": event.server, "method": event.method, "client_id": event.client_id},
        time=event.at,
    )
