"""Browser sessions for the login, consent and console pages. The cookie holds a random id; the store holds its
SHA-256, so a copy of the table opens no session.

A session ends at the first of: its absolute expiry, `idle_timeout` seconds without use, revocation, or rotation
(a new id replaces it when the user's roles or MFA state change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, RowMapping, delete, select, update

from chamberlain.crypto.tokens import digest, new_secret
from chamberlain.store.database import Database
from chamberlain.store.schema import browser_sessions

# Use refreshes last_seen_at at most this often: an idle clock of minutes needs no write on every page.
TOUCH_INTERVAL = 60.0
_HANDLE_BYTES = 16  # an admin-facing handle: the first 128 bits of the id's digest, hex


@dataclass(frozen=True)
class BrowserSession:
    handle: str
    user_id: str
    auth_time: float
    mfa: bool
    roles: tuple[str, ...] | None  # None for sessions started before revision 0004
    created_at: float
    expires_at: float  # absolute
    last_seen_at: float
    idle_timeout: float | None
    client_id: str | None

    def idle_expires_at(self) -> float:
        return (
            self.expires_at
            if self.idle_timeout is None
            else min(self.expires_at, self.last_seen_at + self.idle_timeout)
        )


@dataclass(frozen=True)
class NewSession:
    user_id: str
    mfa: bool
    roles: tuple[str, ...]
    idle_timeout: float
    absolute_timeout: float
    user_agent: str
    client_id: str | None = None
    auth_time: float | None = None  # kept across a rotation; now for a fresh sign-in


class BrowserSessionRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def create(self, session: NewSession) -> str:
        """Returns the new session id; only its digest is stored."""
        session_id = new_secret()
        now = time.time()
        async with self._database.begin() as connection:
            await connection.execute(
                browser_sessions.insert().values(
                    id_hash=digest(session_id),
                    tenant_id=self._tenant_id,
                    user_id=session.user_id,
                    auth_time=session.auth_time if session.auth_time is not None else now,
                    mfa=session.mfa,
                    created_at=now,
                    expires_at=now + session.absolute_timeout,
                    last_seen_at=now,
                    idle_timeout=session.idle_timeout,
                    roles=list(session.roles),
                    user_agent_hash=digest(session.user_agent),
                    client_id=session.client_id,
                )
            )
        return session_id

    async def get(self, session_id: str, *, user_agent: str) -> BrowserSession | None:
        """The live session with this id, used from this browser; its idle clock restarts."""
        id_hash = digest(session_id)
        async with self._database.connect() as connection:
            row = (
                (
                    await connection.execute(
                        select(browser_sessions).where(self._mine(), browser_sessions.c.id_hash == id_hash)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        session = _session(row)
        now = time.time()
        if session.idle_expires_at() <= now:
            return None
        if row["user_agent_hash"] is not None and row["user_agent_hash"] != digest(user_agent):
            return None  # a cookie carried to another browser is not that browser's session
        if now - session.last_seen_at >= TOUCH_INTERVAL:
            async with self._database.begin() as connection:
                await connection.execute(
                    update(browser_sessions)
                    .where(self._mine(), browser_sessions.c.id_hash == id_hash)
                    .values(last_seen_at=now)
                )
        return session

    async def delete(self, session_id: str) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                delete(browser_sessions).where(self._mine(), browser_sessions.c.id_hash == digest(session_id))
            )

    async def list(self, user_id: str | None = None) -> list[BrowserSession]:
        """Live sessions (all, or one user's), newest first. Ids are never returned, only handles."""
        query = select(browser_sessions).where(self._mine(), browser_sessions.c.expires_at > time.time())
        if user_id is not None:
            query = query.where(browser_sessions.c.user_id == user_id)
        async with self._database.connect() as connection:
            rows = (await connection.execute(query.order_by(browser_sessions.c.created_at.desc()))).mappings().all()
        now = time.time()
        return [session for session in map(_session, rows) if session.idle_expires_at() > now]

    async def revoke(self, handle: str) -> bool:
        """Ends the session with this handle; False when there is none in this tenant."""
        try:
            prefix = bytes.fromhex(handle)
        except ValueError:
            return False
        if len(prefix) != _HANDLE_BYTES:
            return False
        # Digests starting with the handle's bytes: one index range on the primary key.
        return await self._delete_where(browser_sessions.c.id_hash.between(prefix, prefix + b"\xff" * 16)) > 0

    async def revoke_user(self, user_id: str) -> int:
        return await self._delete_where(browser_sessions.c.user_id == user_id)

    async def revoke_all(self) -> int:
        return await self._delete_where(None)

    async def _delete_where(self, condition: ColumnElement[bool] | None) -> int:
        query = delete(browser_sessions).where(self._mine())
        if condition is not None:
            query = query.where(condition)
        async with self._database.begin() as connection:
            result = await connection.execute(query)
            return int(result.rowcount or 0)

    def _mine(self) -> ColumnElement[bool]:
        return browser_sessions.c.tenant_id == self._tenant_id


def _session(row: RowMapping) -> BrowserSession:
    roles = row["roles"]
    return BrowserSession(
        handle=bytes(row["id_hash"])[:_HANDLE_BYTES].hex(),
        user_id=row["user_id"],
        auth_time=row["auth_time"],
        mfa=bool(row["mfa"]),
        roles=tuple(roles) if roles is not None else None,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_seen_at=row["last_seen_at"] if row["last_seen_at"] is not None else row["created_at"],
        idle_timeout=row["idle_timeout"],
        client_id=row["client_id"],
    )
