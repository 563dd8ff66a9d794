"""Isolation (issue 6, acceptance 2), as a property: Hypothesis stores credentials with random tenants, sources,
names, bindings and owners (names deliberately shared across tenants), then makes random requests. A value comes
back only for its own tenant, an upstream it is bound to, and, if it is per-user, its user's request; every read and
every refusal is in the requesting tenant's audit log under the request's id, and no event holds a value."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from chamberlain.audit.events import Action, Actor
from chamberlain.audit.log import AuditLog, AuditUnavailable
from chamberlain.audit.reader import read_events
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import Database, create_database
from chamberlain.store.tenants import ensure_tenant
from chamberlain.vault.backend import SecretNotFound, SecretRef
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, LocalKek
from chamberlain.vault.service import CredentialRefused, Vault
from chamberlain.vault.settings import CredentialKind
from tests.support.canary import watch
from tests.support.databases import migrate_url, migrated_database_url

MASTER_KEY = MasterKey(os.urandom(32))
TENANTS = 3
SOURCES = ("github", "confluence")
NAMES = ("token", "key")
UPSTREAMS = ("github", "confluence", "jira")
USERS = ("user-alice", "user-bob")


@dataclass(frozen=True)
class Credential:
    tenant: int
    source: str
    name: str
    bindings: frozenset[str]
    user: str | None


@dataclass(frozen=True)
class Request:
    tenant: int
    upstream: str
    user: str | None
    credential: int  # index into the stored credentials
    namesake: bool  # ask for the same source/name in the requester's own tenant instead


credentials = st.lists(
    st.builds(
        Credential,
        tenant=st.integers(0, TENANTS - 1),
        source=st.sampled_from(SOURCES),
        name=st.sampled_from(NAMES),
        bindings=st.frozensets(st.sampled_from(UPSTREAMS), max_size=2),
        user=st.none() | st.sampled_from(USERS),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda credential: (credential.tenant, credential.source, credential.name),
)
requests = st.lists(
    st.builds(
        Request,
        tenant=st.integers(0, TENANTS - 1),
        upstream=st.sampled_from(UPSTREAMS),
        user=st.none() | st.sampled_from(USERS),
        credential=st.integers(0, 5),
        namesake=st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "vault-isolation")


@contextlib.asynccontextmanager
async def opened_vault(url: str) -> AsyncIterator[tuple[Database, Vault, AuditLog]]:
    database = create_database(url)
    log = AuditLog(database, MASTER_KEY, AuditSettings(commit_delay=0))
    await log.start()
    try:
        yield database, Vault(database, EnvelopeBackend(database, KekRing(LocalKek.generate())), log), log
    finally:
        await log.aclose()
        await database.dispose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored=credentials, asked=requests)
def test_a_credential_reaches_only_its_tenant_upstream_and_user(
    database_url: str, stored: list[Credential], asked: list[Request]
) -> None:
    asyncio.run(_check(database_url, stored, asked))


async def _check(url: str, stored: list[Credential], asked: list[Request]) -> None:
    run = secrets.token_hex(4)
    tenant_ids = [f"t{index}-{run}" for index in range(TENANTS)]
    async with opened_vault(url) as (database, vault, log):
        for tenant_id in tenant_ids:
            await ensure_tenant(database, tenant_id)
        values: dict[SecretRef, tuple[Credential, bytes]] = {}
        for credential in stored:
            ref = SecretRef(tenant_ids[credential.tenant], credential.source, credential.name)
            value = f"value-{secrets.token_hex(12)}".encode()
            watch(value)  # and searched for in everything the run logs and audits
            await vault.store(
                ref, value, kind=CredentialKind.API_KEY, bindings=credential.bindings, user_id=credential.user
            )
            values[ref] = (credential, value)

        outcomes: dict[str, tuple[str, SecretRef, bool]] = {}  # request id -> (requesting tenant, ref, allowed)
        for number, request in enumerate(asked):
            target = stored[request.credential % len(stored)]
            tenant_id = tenant_ids[request.tenant]
            ref = SecretRef(tenant_ids[target.tenant], target.source, target.name)
            if request.namesake:
                ref = SecretRef(tenant_id, target.source, target.name)
            found = values.get(ref)
            allowed = (
                found is not None
                and ref.tenant == tenant_id
                and request.upstream in found[0].bindings
                and (found[0].user is None or found[0].user == request.user)
            )
            request_id = f"req-{run}-{number}"
            outcomes[request_id] = (tenant_id, ref, allowed)
            hypothesis_event("allowed" if allowed else "refused")
            if allowed:
                assert found is not None
                assert await vault.use(tenant_id, request.upstream, request.user, request_id, ref) == found[1]
                continue
            expected = SecretNotFound if found is None or ref.tenant != tenant_id else CredentialRefused
            with pytest.raises(expected) as refused:
                await vault.use(tenant_id, request.upstream, request.user, request_id, ref)
            for _, value in values.values():
                assert value.decode() not in str(refused.value)

        await log.flush()
        events = {
            event.public["request_id"]: event
            for tenant_id in tenant_ids
            for event in await read_events(database, tenant_id, limit=10_000)
            if event.public["request_id"] in outcomes
        }
        assert set(events) == set(outcomes)  # every use and every refusal, exactly once (request ids are unique)
        for request_id, (tenant_id, ref, allowed) in outcomes.items():
            event = events[request_id]
            assert event.tenant == tenant_id  # in the requester's log, never in another tenant's
            assert event.public["target"] == str(ref)
            if allowed:
                assert (event.action, event.outcome) == (Action.CREDENTIAL_READ, "success")
            else:
                assert (event.action, event.outcome) == (Action.CREDENTIAL_REFUSED, "denied")
                assert event.public["reason"]
        recorded = repr([event.public for event in events.values()])
        for _, value in values.values():
            assert value.decode() not in recorded


# -- the rules one by one, each refusal audited --------------------------------------------------------------------


@pytest.fixture
async def vault_and_log(database_url: str) -> AsyncIterator[tuple[Database, Vault, AuditLog, str]]:
    async with opened_vault(database_url) as (database, vault, log):
        tenant_id = f"tenant-{secrets.token_hex(4)}"
        await ensure_tenant(database, tenant_id)
        yield database, vault, log, tenant_id


async def refusal_of(database: Database, log: AuditLog, tenant: str, request_id: str) -> dict[str, object]:
    await log.flush()
    [event] = [
        event.public
        for event in await read_events(database, tenant, actions=[Action.CREDENTIAL_REFUSED], limit=10_000)
        if event.public["request_id"] == request_id
    ]
    return event


async def test_an_unbound_credential_reaches_no_upstream(vault_and_log: tuple[Database, Vault, AuditLog, str]) -> None:
    database, vault, log, tenant = vault_and_log
    ref = SecretRef(tenant, "github", "unbound")
    await vault.store(ref, b"unbound-value", kind=CredentialKind.API_KEY)
    for upstream in UPSTREAMS:
        with pytest.raises(CredentialRefused, match=f"not bound to upstream '{upstream}'"):
            await vault.use(tenant, upstream, "user-alice", f"unbound-{upstream}", ref)
    event = await refusal_of(database, log, tenant, "unbound-github")
    assert event["reason"] == "not bound to upstream 'github'"
    assert event["details"] == {"upstream": "github", "purpose": "upstream request", "kind": "api_key"}
    assert event["actor"] == {"type": "user", "id": "user-alice"}


async def test_a_per_user_credential_is_never_used_for_a_client_acting_for_itself(
    vault_and_log: tuple[Database, Vault, AuditLog, str],
) -> None:
    database, vault, log, tenant = vault_and_log
    ref = SecretRef(tenant, "confluence", "alice-grant")
    await vault.store(ref, b"alice-value", kind=CredentialKind.REFRESH_TOKEN, bindings=["confluence"], user_id="u1")
    with pytest.raises(CredentialRefused, match="belongs to another user"):
        await vault.use(tenant, "confluence", None, "as-client", ref, client_id="batch-job")
    event = await refusal_of(database, log, tenant, "as-client")
    assert event["actor"] == {"type": "client", "id": "batch-job"}
    assert event["reason"] == "a per-user credential of another user"
    assert await vault.use(tenant, "confluence", "u1", "as-alice", ref) == b"alice-value"


async def test_another_tenants_credential_is_answered_as_unknown(
    vault_and_log: tuple[Database, Vault, AuditLog, str],
) -> None:
    database, vault, log, tenant = vault_and_log
    other = f"other-{secrets.token_hex(4)}"
    await ensure_tenant(database, other)
    theirs = SecretRef(other, "github", "token")
    await vault.store(theirs, b"their-value", kind=CredentialKind.API_KEY, bindings=["github"])
    with pytest.raises(SecretNotFound, match=f"no credential github/token in tenant {tenant}"):
        await vault.use(tenant, "github", None, "cross-tenant", theirs)
    assert (await refusal_of(database, log, tenant, "cross-tenant"))[
        "reason"
    ] == "the credential belongs to another tenant"
    # Nothing about the attempt lands in the other tenant's log.
    assert [event for event in await read_events(database, other) if event.public["request_id"] == "cross-tenant"] == []


async def test_a_use_that_cannot_be_audited_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/chamberlain.db"
    await migrate_url(url)
    async with opened_vault(url) as (database, vault, _log):
        await ensure_tenant(database, "acme")
        ref = SecretRef("acme", "github", "token")
        await vault.store(ref, b"guarded-value", kind=CredentialKind.API_KEY, bindings=["github"])
        assert await vault.use("acme", "github", None, "before", ref) == b"guarded-value"
        with contextlib.closing(sqlite3.connect(tmp_path / "chamberlain.db")) as connection:
            connection.execute(
                "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_events "
                "BEGIN SELECT RAISE(ABORT, 'audit storage is read-only'); END"
            )
            connection.commit()
        with pytest.raises(AuditUnavailable):
            await vault.use("acme", "github", None, "after", ref)
        with pytest.raises(AuditUnavailable):
            await vault.read_as_admin(ref, actor=Actor("user", "os:admin"))
