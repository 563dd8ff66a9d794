"""The tenant's SCIM bearer token (RFC 6750): 256 random bits, shown once; the store keeps HMAC-SHA256 of it under
a master-key subkey, so a copy of the database cannot provision users, and checks compare in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import Database
from chamberlain.store.scim import set_token_digest, token_digest

PREFIX = "scim_"  # tells people and secret scanners what the token is


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest_of(master_key: MasterKey, token: str) -> bytes:
    key = master_key.derive("scim-bearer-tokens")
    return hmac.new(key, token.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


async def rotate(database: Database, master_key: MasterKey, tenant_id: str) -> str:
    """A new token for the tenant, replacing any previous one; the caller shows it once."""
    token = new_token()
    await set_token_digest(database, tenant_id, digest_of(master_key, token))
    return token


async def is_valid(database: Database, master_key: MasterKey, tenant_id: str, presented: str) -> bool:
    stored = await token_digest(database, tenant_id)
    # Without a token for the tenant, nothing matches; the digest is still computed so the answer takes as long.
    expected = stored if stored is not None else b"\0" * 32
    return hmac.compare_digest(digest_of(master_key, presented), expected) and stored is not None
