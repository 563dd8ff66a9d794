"""Local user accounts."""

from __future__ import annotations

import builtins
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, RowMapping, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from chamberlain.store.database import Connection, Database
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import grants, users


@dataclass(frozen=True)
class User:
    id: str
    tenant_id: str
    username: str
    password_hash: str | None
    roles: tuple[str, ...]
    totp_secret: bytes | None  # encrypted under the master key
    failed_logins: int
    locked_until: float | None
    must_change_password: bool
    disabled: bool
    created_at: float
    last_login_at: float | None


class UserRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def add(
        self,
        username: str,
        password_hash: str | None,  # None: no local password (the person signs in through an IdP)
        roles: tuple[str, ...],
        *,
        must_change_password: bool = False,
    ) -> User:
        try:
            async with self._database.begin() as connection:
                user_id = await self.insert(
                    connection,
                    username,
                    password_hash,
                    roles,
                    must_change_password=must_change_password,
                    disabled=False,
                    created_at=time.time(),
                )
        except IntegrityError:
            raise AlreadyExists(f"a user named {username!r} already exists") from None
        found = await self.get(user_id)
        assert found is not None
        return found

    async def insert(
        self,
        connection: Connection,
        username: str,
        password_hash: str | None,
        roles: tuple[str, ...],
        *,
        must_change_password: bool,
        disabled: bool,
        created_at: float,
    ) -> str:
        """Inserts the account within the caller's transaction (which sees IntegrityError for a taken name) and
        returns its new id."""
        user_id = str(uuid.uuid4())
        await connection.execute(
            users.insert().values(
                id=user_id,
                tenant_id=self._tenant_id,
                username=username,
                password_hash=password_hash,
                roles=list(roles),
                failed_logins=0,
                must_change_password=must_change_password,
                disabled=disabled,
                created_at=created_at,
            )
        )
        return user_id

    async def get(self, user_id: str) -> User | None:
        return await self._one(users.c.id == user_id)

    async def get_by_username(self, username: str) -> User | None:
        return await self._one(users.c.username == username)

    async def list(self) -> list[User]:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(users).where(users.c.tenant_id == self._tenant_id).order_by(users.c.username)
            )
            return [_user(row) for row in rows.mappings()]

    async def page(self, *, after: str | None, limit: int, containing: str = "") -> builtins.list[User]:
        """Up to `limit` users ordered by name, after the name `after`: keyset paging, so a page is stable while
        users are added or removed elsewhere in the list, and costs the same deep in the list as at its start.
        `containing`: only names that contain it, in any case (the console's search)."""
        query = select(users).where(users.c.tenant_id == self._tenant_id)
        if containing:
            query = query.where(func.lower(users.c.username).contains(containing.lower(), autoescape=True))
        if after is not None:
            query = query.where(users.c.username > after)
        async with self._database.connect() as connection:
            rows = await connection.execute(query.order_by(users.c.username).limit(limit))
            return [_user(row) for row in rows.mappings()]

    async def update_account(
        self, user_id: str, *, roles: tuple[str, ...] | None = None, disabled: bool | None = None
    ) -> User | None:
        """Sets the roles and/or the disabled flag; the user as now stored, or None when there is no such user."""
        values: dict[str, object] = {}
        if roles is not None:
            values["roles"] = list(roles)
        if disabled is not None:
            values["disabled"] = disabled
        if values:
            async with self._database.begin() as connection:
                result = await connection.execute(
                    update(users).where(users.c.tenant_id == self._tenant_id, users.c.id == user_id).values(**values)
                )
                if not result.rowcount:
                    return None
        return await self.get(user_id)

    async def remove(self, user_id: str) -> bool:
        """Deletes the account (its consents and browser sessions go with it, by foreign key)."""
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(users).where(users.c.tenant_id == self._tenant_id, users.c.id == user_id)
            )
            return bool(result.rowcount)

    async def active_grant_ids(self, user_id: str, *, client_id: str | None = None) -> builtins.list[str]:
        """The user's grants (token families) that are neither revoked nor expired, optionally for one client:
        what must be revoked (GrantRepository.revoke_grant) when the user's roles change, or the user goes."""
        query = select(grants.c.id).where(
            grants.c.tenant_id == self._tenant_id,
            grants.c.user_id == user_id,
            grants.c.revoked_at.is_(None),
            grants.c.expires_at > time.time(),
        )
        if client_id is not None:
            query = query.where(grants.c.client_id == client_id)
        async with self._database.connect() as connection:
            return list((await connection.scalars(query.order_by(grants.c.created_at))).all())

    async def record_failed_login(self, user_id: str, *, max_attempts: int, lockout_seconds: int) -> None:
        """Counts a failure atomically; the attempt that reaches the limit locks the account."""
        now = time.time()
        async with self._database.begin() as connection:
            await connection.execute(
                update(users)
                .where(users.c.tenant_id == self._tenant_id, users.c.id == user_id)
                .values(
                    failed_logins=users.c.failed_logins + 1,
                    locked_until=case(
                        (users.c.failed_logins + 1 >= max_attempts, now + lockout_seconds),
                        else_=users.c.locked_until,
                    ),
                )
            )

    async def record_successful_login(self, user_id: str) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                update(users)
                .where(users.c.tenant_id == self._tenant_id, users.c.id == user_id)
                .values(failed_logins=0, locked_until=None, last_login_at=time.time())
            )

    async def set_password(self, user_id: str, password_hash: str, *, must_change_password: bool) -> None:
        await self._update(user_id, password_hash=password_hash, must_change_password=must_change_password)

    async def set_totp_secret(self, user_id: str, encrypted_secret: bytes | None) -> None:
        await self._update(user_id, totp_secret=encrypted_secret)

    async def _update(self, user_id: str, **values: object) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                update(users).where(users.c.tenant_id == self._tenant_id, users.c.id == user_id).values(**values)
            )

    async def _one(self, condition: ColumnElement[bool]) -> User | None:
        async with self._database.connect() as connection:
            row = (
                (await connection.execute(select(users).where(users.c.tenant_id == self._tenant_id, condition)))
                .mappings()
                .first()
            )
            return _user(row) if row else None


def _user(row: RowMapping) -> User:
    data = dict(row)
    data["roles"] = tuple(data["roles"])
    data["must_change_password"] = bool(data["must_change_password"])
    data["disabled"] = bool(data["disabled"])
    return User(**data)
