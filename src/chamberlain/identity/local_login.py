"""Sign-in with a local username and password (and TOTP when enrolled), with lockout after repeated failures."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from chamberlain.crypto.master_key import MasterKey
from chamberlain.identity.passwords import verify_password
from chamberlain.identity.totp import verify_totp
from chamberlain.settings import LoginSettings
from chamberlain.store.users import User, UserRepository


class LoginOutcome(Enum):
    OK = "ok"
    INVALID = "invalid"  # wrong user or password: the page does not say which
    TOTP_REQUIRED = "totp_required"
    LOCKED = "locked"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    user: User | None = None


async def authenticate(
    users: UserRepository,
    settings: LoginSettings,
    master_key: MasterKey,
    *,
    username: str,
    password: str,
    totp: str | None,
) -> LoginResult:
    user = await users.get_by_username(username)
    password_ok = verify_password(user.password_hash if user else None, password)
    if user is None or user.disabled:
        return LoginResult(LoginOutcome.INVALID)
    if user.locked_until is not None and user.locked_until > time.time():
        return LoginResult(LoginOutcome.LOCKED)
    if not password_ok:
        await _fail(users, user, settings)
        return LoginResult(LoginOutcome.INVALID)
    if user.totp_secret is not None:
        if not totp:
            return LoginResult(LoginOutcome.TOTP_REQUIRED, user)
        if not verify_totp(user.totp_secret, user.id, totp, master_key, valid_window=settings.totp_valid_window):
            await _fail(users, user, settings)
            return LoginResult(LoginOutcome.INVALID)
    await users.record_successful_login(user.id)
    return LoginResult(LoginOutcome.OK, user)


async def _fail(users: UserRepository, user: User, settings: LoginSettings) -> None:
    await users.record_failed_login(
        user.id, max_attempts=settings.max_failed_attempts, lockout_seconds=settings.lockout_seconds
    )
