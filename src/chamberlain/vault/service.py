"""The vault as the gateway and the CLI use it: credential records, bindings, and an audit event for every access.

A backend stores values; this service decides who may have them. Each secret has a credential record in the store
(whatever backend holds the value): its kind, owner, the upstream servers it is bound to, for a per-user credential
the user, its maximum age and health. `use` hands a value to the gateway only for an upstream the credential is
bound to, only on its user's requests when it is per-user, only while healthy, and only once the read is recorded
in the audit log (durably, when credential reads are configured fail-closed: the default). Every refusal is
recorded too. Nothing here logs, records or raises a value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from chamberlain.audit.events import Action, Actor, AuditEvent, Outcome
from chamberlain.audit.log import AuditLog
from chamberlain.store.database import Database
from chamberlain.store.servers import check_binding
from chamberlain.store.vault import CredentialRecord, VaultRepository
from chamberlain.vault.backend import SecretBackend, SecretNotFound, SecretRef, SecretVersion, VaultError
from chamberlain.vault.settings import CredentialKind, VaultSettings

__all__ = [
    "REAUTHORIZE",
    "CredentialRecord",
    "CredentialRefused",
    "CredentialUnhealthy",
    "Vault",
]

REAUTHORIZE = "re-consent needed"
GATEWAY = Actor("service", "gateway")


class CredentialRefused(VaultError):
    """The credential exists but may not be used here: another upstream, another user's request."""


class CredentialUnhealthy(CredentialRefused):
    """The upstream refused the credential (a revoked grant): the owner must re-consent or set a new value."""


class Vault:
    def __init__(
        self,
        database: Database,
        backend: SecretBackend,
        audit: AuditLog,
        settings: VaultSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._backend = backend
        self._audit = audit
        self._settings = settings or VaultSettings()
        self._clock = clock

    @property
    def backend(self) -> SecretBackend:
        return self._backend

    @property
    def settings(self) -> VaultSettings:
        return self._settings

    def _repository(self, tenant: str) -> VaultRepository:
        return VaultRepository(self._database, tenant)

    # -- records -------------------------------------------------------------------------------------------------

    async def store(
        self,
        ref: SecretRef,
        value: bytes,
        *,
        kind: CredentialKind,
        owner: str | None = None,
        bindings: Collection[str] = (),
        user_id: str | None = None,
        max_age: float | None = None,
        rotation: Mapping[str, str] | None = None,
    ) -> tuple[CredentialRecord, SecretVersion]:
        """Stores a new version of the value and sets the credential's record (created the first time). The
        previous versions stay until purged. A new value makes an unhealthy credential healthy again."""
        for server in bindings:
            check_binding(server)
        if max_age is not None and max_age <= 0:
            raise ValueError("max_age must be a positive number of seconds")
        if not value:
            raise ValueError(f"refusing to store an empty value for {ref}")
        existing = await self._repository(ref.tenant).credential(ref.source, ref.name)
        version = await self._backend.put(ref, value, metadata={"kind": str(kind)})
        now = self._clock()
        record = CredentialRecord(
            ref=ref,
            kind=kind,
            owner=owner,
            bindings=tuple(sorted(set(bindings))),
            user_id=user_id,
            max_age=max_age,
            rotation=dict(rotation) if rotation is not None else None,
            health="ok",
            health_reason=None,
            created_at=existing.created_at if existing is not None else now,
            rotated_at=now,
        )
        await self._repository(ref.tenant).save_credential(record)
        return record, version

    async def replace_value(self, ref: SecretRef, value: bytes) -> SecretVersion:
        """A new version of an existing credential's value, its record otherwise unchanged (rotation)."""
        record = await self.record(ref)
        if record is None:
            raise SecretNotFound(f"no credential {ref}")
        version = await self._backend.put(ref, value, metadata={"kind": str(record.kind)})
        await self._repository(ref.tenant).set_rotated(ref.source, ref.name, self._clock())
        return version

    async def record(self, ref: SecretRef) -> CredentialRecord | None:
        return await self._repository(ref.tenant).credential(ref.source, ref.name)

    async def records(self, tenant: str, source: str | None = None) -> list[CredentialRecord]:
        return await self._repository(tenant).credentials(source)

    async def remove(self, ref: SecretRef) -> bool:
        """Deletes the value (every version) and the record."""
        had_value = await self._backend.delete(ref)
        had_record = await self._repository(ref.tenant).delete_credential(ref.source, ref.name)
        return had_value or had_record

    async def mark_unhealthy(self, ref: SecretRef, reason: str = REAUTHORIZE) -> bool:
        """The upstream refused the credential (a revoked or expired grant): uses are refused with `reason` until
        a new value is stored."""
        return await self._repository(ref.tenant).set_health(ref.source, ref.name, "unhealthy", reason[:500])

    async def mark_healthy(self, ref: SecretRef) -> bool:
        return await self._repository(ref.tenant).set_health(ref.source, ref.name, "ok", None)

    def max_age_of(self, record: CredentialRecord) -> float | None:
        """Seconds the credential may live: its own max age, else its kind's default; None when unlimited."""
        return record.max_age if record.max_age is not None else self._settings.max_age_for(record.kind)

    # -- access --------------------------------------------------------------------------------------------------

    async def use(
        self,
        tenant: str,
        upstream: str,
        principal_user_id: str | None,
        request_id: str | None,
        ref: SecretRef,
        *,
        client_id: str | None = None,
        purpose: str = "upstream request",
    ) -> bytes:
        """The credential's value for a request of `tenant` to `upstream`, on behalf of `principal_user_id` (None
        for a client acting for itself). Refused, and the refusal recorded, when the credential is another
        tenant's, not bound to this upstream, another user's, or unhealthy. Raises AuditUnavailable (and returns
        nothing) when the read cannot be recorded as the audit settings demand."""
        actor = (
            Actor("user", principal_user_id)
            if principal_user_id
            else Actor("client", client_id)
            if client_id
            else GATEWAY
        )
        details = {"upstream": upstream, "purpose": purpose}
        if ref.tenant != tenant:
            # Structurally another namespace: answer as if it did not exist, so no tenant learns another's names.
            await self._refuse(tenant, actor, ref, request_id, "the credential belongs to another tenant", details)
            raise SecretNotFound(f"no credential {ref.source}/{ref.name} in tenant {tenant}")
        record = await self.record(ref)
        if record is None:
            await self._refuse(tenant, actor, ref, request_id, "no such credential", details)
            raise SecretNotFound(f"no credential {ref}")
        details["kind"] = str(record.kind)
        if upstream not in record.bindings:
            await self._refuse(tenant, actor, ref, request_id, f"not bound to upstream {upstream!r}", details)
            raise CredentialRefused(f"credential {ref} is not bound to upstream {upstream!r}")
        if record.user_id is not None and principal_user_id != record.user_id:
            await self._refuse(tenant, actor, ref, request_id, "a per-user credential of another user", details)
            raise CredentialRefused(f"credential {ref} belongs to another user and is not used on this request")
        if record.health != "ok":
            reason = record.health_reason or REAUTHORIZE
            await self._refuse(tenant, actor, ref, request_id, f"unhealthy: {reason}", details)
            raise CredentialUnhealthy(f"credential {ref} cannot be used: {reason}")
        return await self._read(ref, None, actor, request_id, details)

    async def read_as_admin(
        self,
        ref: SecretRef,
        *,
        actor: Actor,
        version: int | None = None,
        purpose: str = "admin read",
        via: str = "cli",
    ) -> bytes:
        """An administrator's read (`chamberlain vault get`): recorded like every other, with its purpose."""
        details: dict[str, Any] = {"purpose": purpose, "via": via, "version": version or "latest"}
        return await self._read(ref, version, actor, None, details)

    async def read_for_rotation(self, ref: SecretRef, *, rotating: SecretRef, actor: Actor) -> bytes:
        """The credential a rotation needs (an admin connection), recorded with what it is rotating."""
        details = {"purpose": f"rotation of {rotating}"}
        return await self._read(ref, None, actor, None, details)

    async def record_rotation(
        self,
        ref: SecretRef,
        *,
        actor: Actor,
        outcome: Outcome,
        details: Mapping[str, Any],
        reason: str | None = None,
        before_the_change: bool = True,
    ) -> None:
        """A rotation's event. Before the change it is recorded as configured (durably by default: no record, no
        rotation); its completion or failure afterwards is queued, since the change is already made and an audit
        failure then must not report a done rotation as refused."""
        event = AuditEvent(
            action=Action.CREDENTIAL_ROTATED,
            outcome=outcome,
            tenant=ref.tenant,
            actor=actor,
            target=str(ref),
            reason=reason,
            details=dict(details),
        )
        if before_the_change:
            await self._audit.record_as_configured(event)
        else:
            self._audit.record(event)

    async def _read(
        self, ref: SecretRef, version: int | None, actor: Actor, request_id: str | None, details: Mapping[str, Any]
    ) -> bytes:
        try:
            value = await self._backend.get(ref, version)
        except VaultError as problem:
            await self._audit.record_as_configured(
                AuditEvent(
                    action=Action.CREDENTIAL_READ,
                    outcome="error",
                    tenant=ref.tenant,
                    actor=actor,
                    target=str(ref),
                    reason=type(problem).__name__,  # the class says what went wrong; nothing of the value
                    request_id=request_id,
                    details=dict(details),
                )
            )
            raise
        # The value is held back until its read is recorded: if that fails (AuditUnavailable), nobody gets it.
        await self._audit.record_as_configured(
            AuditEvent(
                action=Action.CREDENTIAL_READ,
                outcome="success",
                tenant=ref.tenant,
                actor=actor,
                target=str(ref),
                request_id=request_id,
                details=dict(details),
            )
        )
        return value

    async def _refuse(
        self,
        tenant: str,
        actor: Actor,
        ref: SecretRef,
        request_id: str | None,
        reason: str,
        details: Mapping[str, Any],
    ) -> None:
        await self._audit.record_as_configured(
            AuditEvent(
                action=Action.CREDENTIAL_REFUSED,
                outcome="denied",
                tenant=tenant,
                actor=actor,
                target=str(ref),
                reason=reason,
                request_id=request_id,
                details=dict(details),
            )
        )
