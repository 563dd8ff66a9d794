"""Rotation: which credentials are due, and renewing those whose source lets Chamberlain do it.

A credential is due once it has lived 90% of its maximum age (its own, else its kind's default), overdue once past
it. `rotate` renews a credential whose record names a method:
- "generated": a key Chamberlain generated for one of its own service accounts: a new random key (256 bits) is
  stored as the next version; the previous stays for rollback until purged.
- "postgres_password": a PostgreSQL role's password: `ALTER ROLE … PASSWORD` with a fresh random password, through
  the admin connection stored as another secret of the same source. The server is sent the SCRAM-SHA-256 verifier
  (RFC 5802 §3, RFC 7677), as psql's \\password does, never the password itself: a server logging DDL
  (log_statement = ddl) would otherwise keep the new password in its log. The ALTER and the new version commit
  together: if storing the version fails, the role keeps its old password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine.url import make_url

from chamberlain.audit.events import Actor
from chamberlain.store.vault import CredentialRecord
from chamberlain.vault.backend import SecretNotFound, SecretRef, SecretVersion, VaultError, check_name
from chamberlain.vault.service import Vault

GENERATED = "generated"
POSTGRES_PASSWORD = "postgres_password"
METHODS = (GENERATED, POSTGRES_PASSWORD)
DUE_FRACTION = 0.9  # listed once 90% of the maximum age has passed: time to plan the rotation
SCRAM_ITERATIONS = 4096  # RFC 7677 §4's minimum and PostgreSQL's default (scram_iterations)
_POSTGRES_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1


class RotationNotSupported(VaultError):
    pass


class RotationFailed(VaultError):
    pass


@dataclass(frozen=True, slots=True)
class RotationDue:
    record: CredentialRecord
    age: float  # seconds since the current value was set
    max_age: float

    @property
    def overdue(self) -> bool:
        return self.age >= self.max_age


def generated_rotation(prefix: str = "") -> dict[str, str]:
    return {"method": GENERATED, "prefix": prefix}


def postgres_rotation(role: str, admin: str) -> dict[str, str]:
    """`role`: the PostgreSQL role whose password the credential is; `admin`: the name of the secret (same tenant
    and source) holding a postgresql:// URL allowed to ALTER that role."""
    quote_identifier(role)
    check_name(admin, "secret name")
    return {"method": POSTGRES_PASSWORD, "role": role, "admin": admin}


def new_api_key(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


async def rotation_check(vault: Vault, tenant: str, now: float) -> list[RotationDue]:
    """Credentials past, or within 10% of, their maximum age: overdue first, then the soonest due."""
    return due_for_rotation(await vault.records(tenant), vault, now)


def due_for_rotation(records: Iterable[CredentialRecord], vault: Vault, now: float) -> list[RotationDue]:
    due = []
    for record in records:
        max_age = vault.max_age_of(record)
        if max_age is None:
            continue
        age = max(0.0, now - record.rotated_at)
        if age >= DUE_FRACTION * max_age:
            due.append(RotationDue(record, age, max_age))
    return sorted(due, key=lambda item: (not item.overdue, item.max_age - item.age, str(item.record.ref)))


async def rotate(vault: Vault, ref: SecretRef, *, actor: Actor) -> SecretVersion:
    """Renews the credential by its record's method. Its rotation is recorded (durably by default) before anything
    changes, and its completion or failure after."""
    record = await vault.record(ref)
    if record is None:
        raise SecretNotFound(f"no credential {ref}")
    method = (record.rotation or {}).get("method")
    if method not in METHODS:
        raise RotationNotSupported(
            f"Chamberlain cannot rotate {ref} itself: rotate it at its source, then store the new value with "
            "'chamberlain vault set'"
        )
    details: dict[str, Any] = {"method": method, "stage": "starting"}
    await vault.record_rotation(ref, actor=actor, outcome="success", details=details)
    try:
        if method == GENERATED:
            version = await vault.replace_value(ref, new_api_key((record.rotation or {}).get("prefix", "")).encode())
        else:
            version = await _rotate_postgres_password(vault, record, actor)
    except Exception as problem:
        await vault.record_rotation(
            ref,
            actor=actor,
            outcome="error",
            details={**details, "stage": "failed"},
            reason=type(problem).__name__,
            before_the_change=False,
        )
        raise
    await vault.record_rotation(
        ref,
        actor=actor,
        outcome="success",
        details={**details, "stage": "done", "version": version.version},
        before_the_change=False,
    )
    return version


# -- PostgreSQL ----------------------------------------------------------------------------------------------------


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The verifier PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802 §3, RFC 7677): it authenticates the
    password without containing it. ASCII only: PostgreSQL SASLprep-normalises other passwords first (RFC 4013),
    and the passwords generated here are ASCII."""
    if not password.isascii():
        raise ValueError("only ASCII passwords are turned into verifiers here")
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    salt_text, stored_text, server_text = (base64.b64encode(part).decode() for part in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_text}${stored_text}:{server_text}"


def quote_identifier(name: str) -> str:
    """A PostgreSQL identifier in double quotes, embedded quotes doubled (PostgreSQL docs §4.1.1, quote_ident)."""
    if not name or "\x00" in name or len(name.encode()) > _POSTGRES_IDENTIFIER_BYTES:
        raise ValueError(f"invalid PostgreSQL role name {name!r}: 1-63 bytes, no NUL")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A standard-conforming string literal (§4.1.2.1): quotes doubled; backslashes and NUL refused."""
    if "\\" in value or "\x00" in value:
        raise ValueError("refusing to quote a literal with a backslash or NUL")
    return "'" + value.replace("'", "''") + "'"


async def _rotate_postgres_password(vault: Vault, record: CredentialRecord, actor: Actor) -> SecretVersion:
    import asyncpg  # type: ignore[import-untyped]  # imported here: only this rotation needs it

    ref = record.ref
    rotation = record.rotation or {}
    role, admin = rotation.get("role"), rotation.get("admin")
    if not role or not admin:
        raise RotationNotSupported(f"the rotation of {ref} names no PostgreSQL role or admin connection")
    admin_ref = SecretRef(ref.tenant, ref.source, admin)
    admin_url = (await vault.read_for_rotation(admin_ref, rotating=ref, actor=actor)).decode()
    password = secrets.token_urlsafe(32)
    verifier = scram_sha256_verifier(password)
    sensitive = [password, verifier, admin_url]
    try:
        url = make_url(admin_url)
        if url.get_backend_name() != "postgresql":
            raise ValueError
        if url.password:
            sensitive.append(str(url.password))
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    except Exception:  # sqlalchemy's parse error quotes the URL, password included: say only what is wrong
        raise RotationFailed(f"the admin connection {admin_ref} is not a postgresql:// URL") from None
    statement = f"ALTER ROLE {quote_identifier(role)} PASSWORD {quote_literal(verifier)}"
    try:
        connection = await asyncpg.connect(dsn, timeout=10)
    except Exception as problem:
        raise RotationFailed(
            f"cannot connect with the admin connection {admin_ref}: {_redacted(problem, sensitive)}"
        ) from None
    stored: SecretVersion | None = None
    try:
        async with connection.transaction():
            await connection.execute(statement)
            # Stored before the ALTER commits: if this fails, the transaction rolls back and the old password stays.
            stored = await vault.replace_value(ref, password.encode())
    except VaultError:
        raise
    except Exception as problem:
        if stored is not None:
            raise RotationFailed(
                f"PostgreSQL did not commit the new password of role {role!r}, but version {stored.version} of {ref} "
                f"was stored: run 'chamberlain vault rotate' again ({_redacted(problem, sensitive)})"
            ) from None
        raise RotationFailed(
            f"could not change the password of PostgreSQL role {role!r}: {_redacted(problem, sensitive)}"
        ) from None
    finally:
        await connection.close()
    assert stored is not None
    return stored


def _redacted(problem: BaseException, sensitive: Iterable[str]) -> str:
    """The error's own words, with any secret it might quote removed (a driver may echo a statement or a DSN)."""
    message = f"{type(problem).__name__}: {problem}"
    for value in sensitive:
        if value:
            message = message.replace(value, "[redacted]")
    return message
