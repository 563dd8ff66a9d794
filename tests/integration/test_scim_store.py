"""The SCIM tables: the migration creates what schema.py declares; group memberships give group names per tenant;
a deleted user leaves no SCIM rows behind."""

from __future__ import annotations

import pytest

from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import scim_group_members, scim_groups, scim_tokens, scim_users
from chamberlain.store.scim import ScimRepository, scim_groups_of, set_token_digest, token_digest
from chamberlain.store.tenants import ensure_tenant
from chamberlain.store.users import UserRepository
from tests.support.databases import migrated_url_fixture, opened_database, schema_differences

TABLES = (scim_tokens.name, scim_users.name, scim_groups.name, scim_group_members.name)


url = migrated_url_fixture("scim-store")


async def test_the_migration_creates_what_schema_py_declares(url: str) -> None:
    assert await schema_differences(url, TABLES) == []


async def test_memberships_are_per_tenant_and_go_with_the_user(url: str) -> None:
    async with opened_database(url) as database:
        await ensure_tenant(database, "acme")
        await ensure_tenant(database, "other")
        acme = ScimRepository(database, "acme")
        user_id = await acme.add_user("ada@example.com", disabled=False, roles=(), external_id="x1", resource={})
        created = await UserRepository(database, "acme").get(user_id)
        assert created is not None
        assert created.password_hash is None  # provisioned users have no local password
        with pytest.raises(AlreadyExists):
            await acme.add_user("ada@example.com", disabled=False, roles=(), external_id=None, resource={})
        await acme.add_group("Engineering", None, [user_id])
        await acme.add_group("Admins", None, [user_id])
        with pytest.raises(AlreadyExists):
            await acme.add_group("Engineering", None, [])
        await ScimRepository(database, "other").add_group("Engineering", None, [])  # another tenant's namesake
        assert await scim_groups_of(database, "acme", user_id) == ("Admins", "Engineering")
        assert await scim_groups_of(database, "other", user_id) == ()
        assert await ScimRepository(database, "other").user(user_id) is None
        assert await ScimRepository(database, "other").provisioned([user_id]) == set()
        await UserRepository(database, "acme").remove(user_id)
        assert await acme.user(user_id) is None
        assert await scim_groups_of(database, "acme", user_id) == ()
        assert [group.members for group in await acme.groups()] == [(), ()]


async def test_a_new_token_digest_replaces_the_old(url: str) -> None:
    async with opened_database(url) as database:
        await ensure_tenant(database, "tokens")
        assert await token_digest(database, "tokens") is None
        await set_token_digest(database, "tokens", b"a" * 32)
        await set_token_digest(database, "tokens", b"b" * 32)
        assert await token_digest(database, "tokens") == b"b" * 32
