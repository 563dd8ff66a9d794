"""The SSO tables on SQLite and PostgreSQL: the migration matches schema.py, identifiers are good once on every
replica (the database decides), and an IdP subject links to exactly one account."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select

from chamberlain.identity.passwords import hash_password
from chamberlain.store.federated_identities import FederatedIdentityRepository
from chamberlain.store.schema import directory_cache, federated_identities, seen_identifiers
from chamberlain.store.seen_identifiers import SAML_ASSERTION, SSO_STATE, SeenIdentifiers, purge_expired
from chamberlain.store.tenants import ensure_tenant
from chamberlain.store.users import UserRepository
from tests.support.databases import migrated_url_fixture, opened_database, schema_differences

TABLES = (federated_identities.name, seen_identifiers.name, directory_cache.name)


url = migrated_url_fixture("sso-store")


async def test_the_migration_creates_what_schema_py_declares(url: str) -> None:
    assert await schema_differences(url, TABLES) == []


async def test_an_identifier_is_claimed_once_even_by_concurrent_replicas(url: str) -> None:
    async with opened_database(url) as one, opened_database(url) as two:
        await ensure_tenant(one, "acme")
        expires = time.time() + 300
        results = await asyncio.gather(
            *(SeenIdentifiers(database, "acme").claim(SAML_ASSERTION, "_a1", expires) for database in (one, two) * 4)
        )
        assert sorted(results) == [False] * 7 + [True]
        # The same value of another kind, or in another tenant, is another identifier.
        assert await SeenIdentifiers(one, "acme").claim(SSO_STATE, "_a1", expires)
        await ensure_tenant(one, "other")
        assert await SeenIdentifiers(one, "other").claim(SAML_ASSERTION, "_a1", expires)


async def test_an_expired_claim_no_longer_blocks(url: str) -> None:
    async with opened_database(url) as database:
        await ensure_tenant(database, "acme")
        seen = SeenIdentifiers(database, "acme")
        assert await seen.claim(SAML_ASSERTION, "_short", time.time() - 1)
        assert await seen.claim(SAML_ASSERTION, "_short", time.time() + 60)  # the first had expired: cleared
        assert not await seen.claim(SAML_ASSERTION, "_short", time.time() + 60)


async def test_the_purge_removes_expired_claims_only(url: str) -> None:
    async with opened_database(url) as database:
        await ensure_tenant(database, "acme")
        seen = SeenIdentifiers(database, "acme")
        stale, live = f"_stale-{time.time_ns()}", f"_live-{time.time_ns()}"
        assert await seen.claim(SAML_ASSERTION, stale, time.time() - 1)
        assert await seen.claim(SAML_ASSERTION, live, time.time() + 60)
        assert await purge_expired(database) >= 1
        assert not await seen.claim(SAML_ASSERTION, live, time.time() + 60)  # still refused: it had not expired
        async with database.connect() as connection:
            left = await connection.scalar(
                select(func.count()).select_from(seen_identifiers).where(seen_identifiers.c.expires_at < time.time())
            )
        assert left == 0


async def test_a_subject_links_to_one_account_only(url: str) -> None:
    async with opened_database(url) as database:
        await ensure_tenant(database, "acme")
        users = UserRepository(database, "acme")
        alice = await users.add(f"alice-{time.time_ns()}@example.com", None, ())
        mallory = await users.add(f"mallory-{time.time_ns()}@example.com", hash_password("a long password"), ())
        links = FederatedIdentityRepository(database, "acme")
        assert await links.link("okta", "00u1", alice.id)
        assert not await links.link("okta", "00u1", mallory.id)
        assert await links.user_of("okta", "00u1") == alice.id
        assert await links.links_of(alice.id) == [("okta", "00u1")]
        await users.remove(alice.id)  # the link goes with the account
        assert await links.user_of("okta", "00u1") is None
