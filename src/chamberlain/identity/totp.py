"""Time-based one-time passwords (RFC 6238) as a local second factor; seeds are encrypted under the master key."""

from __future__ import annotations

import pyotp

from chamberlain.crypto.master_key import MasterKey


def new_totp_seed() -> str:
    return pyotp.random_base32()


def provisioning_uri(seed: str, *, username: str, issuer: str) -> str:
    return str(pyotp.TOTP(seed).provisioning_uri(name=username, issuer_name=issuer))


def encrypt_seed(seed: str, user_id: str, master_key: MasterKey) -> bytes:
    return master_key.encrypt(seed.encode(), f"totp:{user_id}".encode())


def verify_totp(encrypted_seed: bytes, user_id: str, code: str, master_key: MasterKey, *, valid_window: int) -> bool:
    if not code.isdigit() or len(code) != 6:
        return False
    seed = master_key.decrypt(encrypted_seed, f"totp:{user_id}".encode()).decode()
    return bool(pyotp.TOTP(seed).verify(code, valid_window=valid_window))
