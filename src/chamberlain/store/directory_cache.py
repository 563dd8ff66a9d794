"""What an LDAP directory last said about the people it vouched for (`directory_cache`), so that a directory that
cannot be reached does not lock them out within the provider's cache TTL, like SSSD's cached credentials.

Only a successful sign-in at the directory writes here. The password is kept as an argon2id hash (RFC 9106) with
the parameters of local accounts (identity/passwords.py) but without their policy: the directory, not Chamberlain,
decides what its passwords may be. Usernames are keyed as typed, case-folded: uid, mail, sAMAccountName and
userPrincipalName all match case-insensitively in the directory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import ColumnElement, and_, delete, select
from sqlalchemy.exc import IntegrityError

from chamberlain.identity.passwords import MAX_LENGTH, verify_password
from chamberlain.store.database import Database
from chamberlain.store.schema import directory_cache

_hasher = PasswordHasher()  # argon2-cffi's RFC 9106 defaults, as identity/passwords.py


@dataclass(frozen=True)
class CachedEntry:
    user_dn: str
    email: str | None
    groups: tuple[str, ...]
    refreshed_at: float


class DirectoryCache:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def remember(
        self, provider: str, username: str, password: str, *, user_dn: str, email: str | None, groups: tuple[str, ...]
    ) -> None:
        """Keeps what the directory just vouched for, replacing what was kept for this username."""
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        key = _key(username)
        try:
            async with self._database.begin() as connection:
                await connection.execute(delete(directory_cache).where(self._entry(provider, key)))
                await connection.execute(
                    directory_cache.insert().values(
                        tenant_id=self._tenant_id,
                        provider=provider,
                        username=key,
                        user_dn=user_dn,
                        email=email,
                        groups=list(groups),
                        password_hash=password_hash,
                        refreshed_at=time.time(),
                    )
                )
        except IntegrityError:
            pass  # a concurrent sign-in of the same person stored the same answer first

    async def vouched(self, provider: str, username: str, password: str, *, max_age: float) -> CachedEntry | None:
        """The kept entry when it is younger than `max_age` seconds and `password` matches its hash; else None.
        The hash check costs the same whether or not anything is kept (a dummy hash stands in)."""
        if len(password) > MAX_LENGTH:
            return None
        async with self._database.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        directory_cache.c.user_dn,
                        directory_cache.c.email,
                        directory_cache.c.groups,
                        directory_cache.c.password_hash,
                        directory_cache.c.refreshed_at,
                    ).where(self._entry(provider, _key(username)))
                )
            ).first()
        fresh = row is not None and time.time() - row.refreshed_at < max_age
        password_hash = row.password_hash if row is not None and fresh else None
        if not await asyncio.to_thread(verify_password, password_hash, password) or row is None:
            return None
        return CachedEntry(row.user_dn, row.email, tuple(row.groups), row.refreshed_at)

    async def forget_provider(self, provider: str) -> int:
        """Drops everything kept for a provider being removed; returns how many people that was."""
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(directory_cache).where(
                    directory_cache.c.tenant_id == self._tenant_id, directory_cache.c.provider == provider
                )
            )
            return int(result.rowcount or 0)

    def _entry(self, provider: str, key: str) -> ColumnElement[bool]:
        return and_(
            directory_cache.c.tenant_id == self._tenant_id,
            directory_cache.c.provider == provider,
            directory_cache.c.username == key,
        )


def _key(username: str) -> str:
    return username.strip().casefold()
