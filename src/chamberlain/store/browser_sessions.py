"""Browser sessions for the login and consent pages. The cookie holds a random id; the store holds its digest."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from chamberlain.crypto.tokens import digest, new_secret
from chamberlain.store.database import Database
from chamberlain.store.schema import browser_sessions


@dataclass(frozen=True)
class BrowserSession:
    user_id: str
    auth_time: float
    mfa: bool
    expires_at: float


class BrowserSessionRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def create(self, user_id: str, *, mfa: bool, ttl: float) -> str:
        """Returns the new session id; only its digest is stored."""
        session_id = new_secret()
        now = time.time()
        async with self._database.begin() as connection:
            await connection.execute(
                browser_sessions.insert().values(
                    id_hash=digest(session_id),
                    tenant_id=self._tenant_id,
                    user_id=user_id,
                    auth_time=now,
                    mfa=mfa,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return session_id

    async def get(self, session_id: str) -> BrowserSession | None:
        async with self._database.connect() as connection:
            row = (
                await connection.execute(
                    select(browser_sessions).where(
                        browser_sessions.c.tenant_id == self._tenant_id,
                        browser_sessions.c.id_hash == digest(session_id),
                        browser_sessions.c.expires_at > time.time(),
                    )
                )
            ).first()
        return BrowserSession(row.user_id, row.auth_time, bool(row.mfa), row.expires_at) if row else None

    async def delete(self, session_id: str) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                delete(browser_sessions).where(
                    browser_sessions.c.tenant_id == self._tenant_id,
                    browser_sessions.c.id_hash == digest(session_id),
                )
            )
