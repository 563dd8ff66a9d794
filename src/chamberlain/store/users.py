"""Local user accounts."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, RowMapping, case, select, update
from sqlalchemy.exc import IntegrityError

from chamberlain.store.database import Database
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import users


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
        password_hash: str,
        roles: tuple[str, ...],
        *,
        must_change_password: bool = False,
    ) -> User:
        user_id = str(uuid.uuid4())
        try:
            async with self._database.begin() as connection:
                await connection.execute(
                    users.insert().values(
                        id=user_id,
                        tenant_id=self._tenant_id,
                        username=username,
                        password_hash=password_hash,
                        roles=list(roles),
                        failed_logins=0,
                        must_change_password=must_change_password,
                        disabled=False,
                        created_at=time.time(),
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a user named {username!r} already exists") from None
        found = await self.get(user_id)
        assert found is not None
        return found

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
