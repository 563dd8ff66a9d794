"""directory_cache on SQLite and PostgreSQL: what a directory vouched for, kept per tenant and provider, usable only
with the same password and within the age asked for."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from chamberlain.store.directory_cache import DirectoryCache
from chamberlain.store.schema import directory_cache
from chamberlain.store.tenants import ensure_tenant
from tests.support.databases import migrated_database_url, opened_database

DN = "uid=alice,ou=people,dc=example,dc=org"
GROUPS = ("cn=engineering,ou=groups,dc=example,dc=org", "cn=platform,ou=groups,dc=example,dc=org")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "ldap-cache")


async def test_an_entry_vouches_only_with_its_password_within_the_age_asked(url: str) -> None:
    async with opened_database(url) as database:
        await ensure_tenant(database, "acme")
        cache = DirectoryCache(database, "acme")
        await cache.remember("corp", "Alice@Example.org", "pw", user_dn=DN, email="alice@example.org", groups=GROUPS)

        found = await cache.vouched("corp", " alice@example.org", "pw", max_age=60)  # a 2-letter password: kept
        assert found is not None
        assert (found.user_dn, found.email, found.groups) == (DN, "alice@example.org", GROUPS)
        assert await cache.vouched("corp", "alice@example.org", "PW", max_age=60) is None
        assert await cache.vouched("corp", "alice@example.org", "pw" * 600, max_age=60) is None
        assert await cache.vouched("other", "alice@example.org", "pw", max_age=60) is None
        async with database.begin() as connection:
            await connection.execute(update(directory_cache).values(refreshed_at=time.time() - 61))
        assert await cache.vouched("corp", "alice@example.org", "pw", max_age=60) is None
        assert await cache.vouched("corp", "alice@example.org", "pw", max_age=120) is not None


async def test_remembering_again_replaces_and_the_password_is_kept_only_as_an_argon2id_hash(url: str) -> None:
    async with opened_database(url) as database:
        await ensure_tenant(database, "acme")
        cache = DirectoryCache(database, "acme")
        await cache.remember("corp", "bob", "old-password", user_dn=DN, email=None, groups=GROUPS)
        await cache.remember("corp", "BOB", "new-password", user_dn=DN, email=None, groups=())
        async with database.connect() as connection:
            rows = (await connection.execute(select(directory_cache).where(directory_cache.c.username == "bob"))).all()
        assert len(rows) == 1
        assert rows[0].password_hash.startswith("$argon2id$")
        assert "new-password" not in rows[0].password_hash
        assert await cache.vouched("corp", "bob", "old-password", max_age=60) is None
        found = await cache.vouched("corp", "bob", "new-password", max_age=60)
        assert found is not None
        assert found.groups == ()


async def test_tenants_do_not_share_entries_and_a_removed_provider_is_forgotten(url: str) -> None:
    async with opened_database(url) as database:
        for tenant in ("acme", "globex"):
            await ensure_tenant(database, tenant)
        acme, globex = DirectoryCache(database, "acme"), DirectoryCache(database, "globex")
        await acme.remember("corp", "carol", "secret", user_dn=DN, email=None, groups=GROUPS)
        await globex.remember("corp", "carol", "secret", user_dn=DN, email=None, groups=GROUPS)
        assert await acme.forget_provider("corp") >= 1
        assert await acme.vouched("corp", "carol", "secret", max_age=60) is None
        assert await globex.vouched("corp", "carol", "secret", max_age=60) is not None
