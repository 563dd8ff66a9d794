"""Password hashing with argon2id (RFC 9106), and a dummy verification so unknown users cost the same time."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults follow RFC 9106 §4's second recommended option (argon2id, 64 MiB, t=3, p=4).
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("a password nobody has")

MIN_LENGTH = 8
MAX_LENGTH = 1024  # argon2 takes anything, but an unbounded input is a cheap denial of service


class PasswordPolicyError(ValueError):
    pass


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"the password must have at most {MAX_LENGTH} characters")


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists: a missing hash is checked against a dummy one."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
