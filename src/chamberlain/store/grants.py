"""Authorization codes, grants (token families), refresh tokens and the revocation feed.

Single use is enforced by the database, not by a read-then-write in Python: a code or refresh token is claimed with
one conditional UPDATE, so two concurrent requests (or two replicas) can never both redeem the same secret.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import RowMapping, bindparam, func, select, update

from chamberlain.store.database import Connection, Database
from chamberlain.store.schema import authorization_codes, grants, refresh_tokens, revocations, users


@dataclass(frozen=True)
class AuthorizationCode:
    client_id: str
    user_id: str
    redirect_uri: str
    redirect_uri_given: bool
    scope: str
    resource: str
    code_challenge: str | None
    auth_time: float
    expires_at: float


@dataclass(frozen=True)
class Grant:
    id: str
    tenant_id: str
    client_id: str
    user_id: str | None
    scope: str
    resource: str
    auth_time: float | None
    created_at: float
    expires_at: float
    revoked_at: float | None
    roles: tuple[str, ...] = ()  # the user's roles when the grant was made; a role change revokes the grant


@dataclass(frozen=True)
class CodeRedemption:
    """`grant` is set on first use; `replayed` when the code had been redeemed before (its grant is now revoked)."""

    code: AuthorizationCode | None
    grant: Grant | None
    replayed: bool


@dataclass(frozen=True)
class RefreshRotation:
    grant: Grant | None
    scope: str
    reused: bool  # a rotated token came back: the family was revoked (RFC 9700 §4.14.2)
    expired: bool


RevocationKind = Literal["grant", "jti", "client"]


def tenant_client_key(tenant_id: str, client_id: str) -> str:
    """A client's entry in the revocation feed. Tenant ids hold no ':', so the first one separates the two."""
    return f"{tenant_id}:{client_id}"


@dataclass(frozen=True)
class Revocation:
    id: int
    kind: RevocationKind
    value: str
    expires_at: float


# The refresh grant is the hottest write path: its statements are built once, not per request.
_CLAIM_REFRESH_TOKEN = (
    update(refresh_tokens)
    .where(refresh_tokens.c.token_hash == bindparam("hash"), refresh_tokens.c.rotated_at.is_(None))
    .values(rotated_at=bindparam("now"))
    # SQLite's RETURNING sees only the updated table, so the grant is read by its key afterwards.
    .returning(refresh_tokens.c.grant_id, refresh_tokens.c.scope, refresh_tokens.c.expires_at)
)
_GRANT_BY_ID = select(grants).where(grants.c.id == bindparam("grant_id"), grants.c.tenant_id == bindparam("tenant"))
_REFRESH_TOKEN_WITH_GRANT = (
    select(
        refresh_tokens.c.scope.label("token_scope"),
        refresh_tokens.c.expires_at.label("token_expires_at"),
        refresh_tokens.c.rotated_at,
        grants,
    )
    .join(grants, grants.c.id == refresh_tokens.c.grant_id)
    .where(refresh_tokens.c.token_hash == bindparam("hash"), grants.c.tenant_id == bindparam("tenant"))
)
_INSERT_REFRESH_TOKEN = refresh_tokens.insert()
_USER_ROLES = select(users.c.roles).where(users.c.id == bindparam("user_id"), users.c.tenant_id == bindparam("tenant"))


class _WrongTenant(Exception):
    pass


class GrantRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    # -- authorization codes ---------------------------------------------------------------------------------------

    async def add_code(self, code_hash: bytes, code: AuthorizationCode) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                authorization_codes.insert().values(
                    code_hash=code_hash,
                    tenant_id=self._tenant_id,
                    created_at=time.time(),
                    grant_id=None,
                    **code.__dict__,
                )
            )

    async def redeem_code(
        self, code_hash: bytes, *, grant_ttl: float, validate: Callable[[AuthorizationCode], None]
    ) -> CodeRedemption:
        """Claims the code and opens its grant in one transaction; a second redemption revokes that grant.

        RFC 6749 §4.1.2 / OAuth 2.1 §4.1.3: a code used twice must be refused, and the tokens issued from it
        should be revoked. `validate` runs before anything is written: if it raises, nothing changes.
        """
        now = time.time()
        grant_id = str(uuid.uuid4())
        async with self._database.begin() as connection:
            claimed = await connection.execute(
                update(authorization_codes)
                .where(
                    authorization_codes.c.tenant_id == self._tenant_id,
                    authorization_codes.c.code_hash == code_hash,
                    authorization_codes.c.grant_id.is_(None),
                )
                .values(grant_id=grant_id)
            )
            row = (
                (
                    await connection.execute(
                        select(authorization_codes).where(
                            authorization_codes.c.tenant_id == self._tenant_id,
                            authorization_codes.c.code_hash == code_hash,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return CodeRedemption(None, None, replayed=False)
            code = _code(row)
            if claimed.rowcount != 1:
                await self._revoke_grant(connection, row["grant_id"], "code_replay", now)
                return CodeRedemption(code, None, replayed=True)
            validate(code)
            roles = await connection.execute(_USER_ROLES, {"user_id": code.user_id, "tenant": self._tenant_id})
            grant = Grant(
                grant_id,
                self._tenant_id,
                code.client_id,
                code.user_id,
                code.scope,
                code.resource,
                code.auth_time,
                now,
                now + grant_ttl,
                None,
                tuple(roles.scalar_one_or_none() or ()),
            )
            await connection.execute(grants.insert().values(**grant.__dict__))
            return CodeRedemption(code, grant, replayed=False)

    # -- grants and refresh tokens ---------------------------------------------------------------------------------

    async def add_refresh_token(self, token_hash: bytes, grant: Grant, scope: str) -> None:
        async with self._database.begin() as connection:
            await self._insert_refresh_token(connection, token_hash, grant, scope)

    async def rotate_refresh_token(
        self, token_hash: bytes, successor_hash: bytes, validate: Callable[[Grant], None]
    ) -> RefreshRotation:
        """Marks the token used and stores its successor atomically. Reuse of a rotated token revokes the family.

        `validate` runs inside the transaction before anything is written; if it raises, nothing changes, so a
        request refused for its scope or client does not burn the caller's refresh token.
        RFC 6749 §6: the successor keeps exactly the scope of the token it replaces.
        """
        now = time.time()
        try:
            async with self._database.begin() as connection:
                # The claim returns what the happy path needs; only a failed claim takes a second look.
                claimed = (await connection.execute(_CLAIM_REFRESH_TOKEN, {"hash": token_hash, "now": now})).first()
                if claimed is None:
                    known = await self._refresh_token_row(connection, token_hash)
                    if known is None:
                        return RefreshRotation(None, "", reused=False, expired=False)
                    grant = _grant(known)
                    await self._revoke_grant(connection, grant.id, "refresh_token_reuse", now)
                    return RefreshRotation(grant, known["token_scope"], reused=True, expired=False)
                found = await connection.execute(
                    _GRANT_BY_ID, {"grant_id": claimed.grant_id, "tenant": self._tenant_id}
                )
                grant_row = found.mappings().first()
                if grant_row is None:  # another tenant's token: as unknown as a token that never existed
                    raise _WrongTenant
                grant = _grant(grant_row)
                if claimed.expires_at <= now or grant.expires_at <= now or grant.revoked_at is not None:
                    return RefreshRotation(grant, claimed.scope, reused=False, expired=True)
                validate(grant)
                await self._insert_refresh_token(connection, successor_hash, grant, claimed.scope)
                return RefreshRotation(grant, claimed.scope, reused=False, expired=False)
        except _WrongTenant:  # rolled back: the claim on another tenant's token is undone
            return RefreshRotation(None, "", reused=False, expired=False)

    async def find_refresh_token(self, token_hash: bytes) -> tuple[Grant, bool] | None:
        """The grant behind a refresh token and whether that token is still current (not rotated away)."""
        async with self._database.connect() as connection:
            row = await self._refresh_token_row(connection, token_hash)
        if row is None:
            return None
        current = row["rotated_at"] is None and row["token_expires_at"] > time.time()
        return _grant(row), current

    async def _refresh_token_row(self, connection: Connection, token_hash: bytes) -> RowMapping | None:
        result = await connection.execute(_REFRESH_TOKEN_WITH_GRANT, {"hash": token_hash, "tenant": self._tenant_id})
        return result.mappings().first()

    async def revoke_grant(self, grant_id: str, reason: str) -> None:
        async with self._database.begin() as connection:
            await self._revoke_grant(connection, grant_id, reason, time.time())

    async def revoke_client_grants(self, client_id: str, reason: str) -> int:
        now = time.time()
        async with self._database.begin() as connection:
            ids = (
                await connection.scalars(
                    select(grants.c.id).where(
                        grants.c.tenant_id == self._tenant_id,
                        grants.c.client_id == client_id,
                        grants.c.revoked_at.is_(None),
                        grants.c.expires_at > now,
                    )
                )
            ).all()
            for grant_id in ids:
                await self._revoke_grant(connection, grant_id, reason, now)
            return len(ids)

    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        await self._append_revocation("jti", jti, expires_at)

    async def revoke_client_tokens(self, client_id: str, *, longest_token_lifetime: float) -> None:
        """Stops every token the client holds in this tenant, including client-credentials tokens that belong to no
        grant. The same client id in another tenant (a CIMD URL signs in anywhere) is another client."""
        key = tenant_client_key(self._tenant_id, client_id)
        await self._append_revocation("client", key, time.time() + longest_token_lifetime)

    async def _append_revocation(self, kind: RevocationKind, value: str, expires_at: float) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                revocations.insert().values(kind=kind, value=value, expires_at=expires_at, created_at=time.time())
            )

    async def _revoke_grant(self, connection: Connection, grant_id: str | None, reason: str, now: float) -> None:
        if grant_id is None:
            return
        expires_at = await connection.scalar(
            update(grants)
            .where(grants.c.tenant_id == self._tenant_id, grants.c.id == grant_id, grants.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(grants.c.expires_at)
        )
        if expires_at is not None:
            await connection.execute(
                revocations.insert().values(kind="grant", value=grant_id, expires_at=expires_at, created_at=now)
            )

    async def _insert_refresh_token(self, connection: Connection, token_hash: bytes, grant: Grant, scope: str) -> None:
        await connection.execute(
            _INSERT_REFRESH_TOKEN,
            {
                "token_hash": token_hash,
                "grant_id": grant.id,
                "scope": scope,
                "created_at": time.time(),
                "expires_at": grant.expires_at,
            },
        )


async def revocations_since(database: Database, last_id: int) -> list[Revocation]:
    """The revocation feed after `last_id`, still-live entries only (all tenants: ids are globally unique)."""
    async with database.connect() as connection:
        rows = await connection.execute(
            select(revocations)
            .where(revocations.c.id > last_id, revocations.c.expires_at > time.time())
            .order_by(revocations.c.id)
        )
        return [Revocation(row.id, row.kind, row.value, row.expires_at) for row in rows]


async def latest_revocation_id(database: Database) -> int:
    """The feed's highest id (0 when empty)."""
    async with database.connect() as connection:
        return int(await connection.scalar(select(func.coalesce(func.max(revocations.c.id), 0))) or 0)


def _code(row: RowMapping) -> AuthorizationCode:
    return AuthorizationCode(
        client_id=row["client_id"],
        user_id=row["user_id"],
        redirect_uri=row["redirect_uri"],
        redirect_uri_given=bool(row["redirect_uri_given"]),
        scope=row["scope"],
        resource=row["resource"],
        code_challenge=row["code_challenge"],
        auth_time=row["auth_time"],
        expires_at=row["expires_at"],
    )


def _grant(row: RowMapping) -> Grant:
    return Grant(
        id=row["id"],
        tenant_id=row["tenant_id"],
        client_id=row["client_id"],
        user_id=row["user_id"],
        scope=row["scope"],
        resource=row["resource"],
        auth_time=row["auth_time"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        roles=tuple(row["roles"] or ()),
    )
