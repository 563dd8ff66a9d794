"""What the SCIM endpoint (scim/) keeps: the tenant's bearer token digest, the attributes of users an IdP
provisioned (userName and active live in the users table), and pushed groups with their members."""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping, delete, select, update
from sqlalchemy.exc import IntegrityError

from chamberlain.store.database import Connection, Database
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import scim_group_members, scim_groups, scim_tokens, scim_users, users
from chamberlain.store.users import UserRepository


@dataclass(frozen=True)
class ScimUserRow:
    user_id: str
    username: str  # from the users table
    disabled: bool  # from the users table
    external_id: str | None
    resource: dict[str, Any]  # the SCIM attributes besides id, userName, active and meta
    version: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ScimGroupRow:
    id: str
    display_name: str
    external_id: str | None
    members: tuple[str, ...]  # user ids, sorted
    version: int
    created_at: float
    updated_at: float


async def token_digest(database: Database, tenant_id: str) -> bytes | None:
    async with database.connect() as connection:
        found = await connection.scalar(select(scim_tokens.c.digest).where(scim_tokens.c.tenant_id == tenant_id))
    return bytes(found) if found is not None else None


async def set_token_digest(database: Database, tenant_id: str, digest: bytes) -> None:
    """Creates or replaces the tenant's token: the previous one stops working at once."""
    async with database.begin() as connection:
        await connection.execute(delete(scim_tokens).where(scim_tokens.c.tenant_id == tenant_id))
        await connection.execute(
            scim_tokens.insert().values(tenant_id=tenant_id, digest=digest, created_at=time.time())
        )


async def scim_groups_of(database: Database, tenant_id: str, user_id: str) -> tuple[str, ...]:
    """The displayNames of the SCIM groups the user belongs to (sorted): group names for the group mappings."""
    async with database.connect() as connection:
        names = await connection.scalars(
            select(scim_groups.c.display_name)
            .join(scim_group_members, scim_group_members.c.group_id == scim_groups.c.id)
            .where(scim_groups.c.tenant_id == tenant_id, scim_group_members.c.user_id == user_id)
        )
        return tuple(sorted(names.all()))


class ScimRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    # -- users -------------------------------------------------------------------------------------------------------

    async def add_user(
        self,
        username: str,
        *,
        disabled: bool,
        roles: tuple[str, ...],
        external_id: str | None,
        resource: Mapping[str, Any],
    ) -> str:
        """Creates the account (no local password: the person signs in through the IdP) and its SCIM attributes in
        one transaction; AlreadyExists when the tenant has a user of that name."""
        now = time.time()
        try:
            async with self._database.begin() as connection:
                user_id = await UserRepository(self._database, self._tenant_id).insert(
                    connection,
                    username,
                    None,
                    roles,
                    must_change_password=False,
                    disabled=disabled,
                    created_at=now,
                )
                await connection.execute(
                    scim_users.insert().values(
                        user_id=user_id,
                        tenant_id=self._tenant_id,
                        external_id=external_id,
                        resource=dict(resource),
                        version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a user named {username!r} already exists") from None
        return user_id

    async def user(self, user_id: str) -> ScimUserRow | None:
        found = await self._users(user_id)
        return found[0] if found else None

    async def users(self) -> list[ScimUserRow]:
        return await self._users(None)

    async def _users(self, user_id: str | None) -> list[ScimUserRow]:
        query = (
            select(scim_users, users.c.username, users.c.disabled)
            .join(users, users.c.id == scim_users.c.user_id)
            .where(scim_users.c.tenant_id == self._tenant_id, users.c.tenant_id == self._tenant_id)
        )
        if user_id is not None:
            query = query.where(scim_users.c.user_id == user_id)
        async with self._database.connect() as connection:
            rows = await connection.execute(query.order_by(scim_users.c.created_at, scim_users.c.user_id))
            return [_user_row(row) for row in rows.mappings()]

    async def update_user(
        self, user_id: str, *, username: str, external_id: str | None, resource: Mapping[str, Any]
    ) -> None:
        """Replaces the SCIM attributes and the user name; AlreadyExists when another user has that name."""
        try:
            async with self._database.begin() as connection:
                await connection.execute(
                    update(users)
                    .where(users.c.tenant_id == self._tenant_id, users.c.id == user_id)
                    .values(username=username)
                )
                await connection.execute(
                    update(scim_users)
                    .where(scim_users.c.tenant_id == self._tenant_id, scim_users.c.user_id == user_id)
                    .values(
                        external_id=external_id,
                        resource=dict(resource),
                        version=scim_users.c.version + 1,
                        updated_at=time.time(),
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a user named {username!r} already exists") from None

    # -- groups ------------------------------------------------------------------------------------------------------

    async def add_group(self, display_name: str, external_id: str | None, members: Collection[str]) -> str:
        group_id = str(uuid.uuid4())
        now = time.time()
        try:
            async with self._database.begin() as connection:
                await connection.execute(
                    scim_groups.insert().values(
                        id=group_id,
                        tenant_id=self._tenant_id,
                        display_name=display_name,
                        external_id=external_id,
                        version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                await _insert_members(connection, group_id, members)
        except IntegrityError:
            raise AlreadyExists(f"a group named {display_name!r} already exists") from None
        return group_id

    async def group(self, group_id: str) -> ScimGroupRow | None:
        found = await self._groups(group_id)
        return found[0] if found else None

    async def groups(self) -> list[ScimGroupRow]:
        return await self._groups(None)

    async def update_group(
        self, group_id: str, *, display_name: str, external_id: str | None, members: Collection[str]
    ) -> None:
        try:
            async with self._database.begin() as connection:
                await connection.execute(
                    update(scim_groups)
                    .where(scim_groups.c.tenant_id == self._tenant_id, scim_groups.c.id == group_id)
                    .values(
                        display_name=display_name,
                        external_id=external_id,
                        version=scim_groups.c.version + 1,
                        updated_at=time.time(),
                    )
                )
                await connection.execute(delete(scim_group_members).where(scim_group_members.c.group_id == group_id))
                await _insert_members(connection, group_id, members)
        except IntegrityError:
            raise AlreadyExists(f"a group named {display_name!r} already exists") from None

    async def remove_group(self, group_id: str) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(scim_groups).where(scim_groups.c.tenant_id == self._tenant_id, scim_groups.c.id == group_id)
            )
            return bool(result.rowcount)

    async def provisioned(self, user_ids: Collection[str]) -> set[str]:
        """Which of these ids are users of this tenant the IdP provisioned: the only ones a group may hold."""
        if not user_ids:
            return set()
        async with self._database.connect() as connection:
            found = await connection.scalars(
                select(scim_users.c.user_id).where(
                    scim_users.c.tenant_id == self._tenant_id, scim_users.c.user_id.in_(list(user_ids))
                )
            )
            return set(found.all())

    async def _groups(self, group_id: str | None) -> list[ScimGroupRow]:
        query = select(scim_groups).where(scim_groups.c.tenant_id == self._tenant_id)
        if group_id is not None:
            query = query.where(scim_groups.c.id == group_id)
        async with self._database.connect() as connection:
            rows = (
                (await connection.execute(query.order_by(scim_groups.c.created_at, scim_groups.c.id))).mappings().all()
            )
            ids = [row["id"] for row in rows]
            members: dict[str, list[str]] = {}
            if ids:
                pairs = await connection.execute(
                    select(scim_group_members.c.group_id, scim_group_members.c.user_id).where(
                        scim_group_members.c.group_id.in_(ids)
                    )
                )
                for pair in pairs:
                    members.setdefault(pair.group_id, []).append(pair.user_id)
        return [
            ScimGroupRow(
                id=row["id"],
                display_name=row["display_name"],
                external_id=row["external_id"],
                members=tuple(sorted(members.get(row["id"], []))),
                version=row["version"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
            for row in rows
        ]


async def _insert_members(connection: Connection, group_id: str, members: Collection[str]) -> None:
    if members:
        await connection.execute(
            scim_group_members.insert(), [{"group_id": group_id, "user_id": member} for member in sorted(members)]
        )


def _user_row(row: RowMapping) -> ScimUserRow:
    return ScimUserRow(
        user_id=row["user_id"],
        username=row["username"],
        disabled=bool(row["disabled"]),
        external_id=row["external_id"],
        resource=dict(row["resource"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
