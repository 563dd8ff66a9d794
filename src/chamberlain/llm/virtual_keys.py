"""Virtual keys: per-user API keys for the LLM proxy, for tools that cannot run an OAuth flow (`x-api-key: chk_…`).

A key is 256 random bits after the `chk_` prefix (so secret scanners and people can tell it apart from an Anthropic
key). The store keeps HMAC-SHA256 of it under a subkey of the master key, never the key: a copy of the database
cannot be used to call the API, and without the master key a digest cannot be checked against guesses either.

The request path never reads the store: every process holds an index from digest to the key's user and that user's
current roles, reloaded by the state refresher when a key is added or revoked (within a second, everywhere) and at
least every FULL_RELOAD_INTERVAL seconds, which is how a change of the user's roles, or the user being disabled or
removed, reaches keys already issued.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from chamberlain.crypto.master_key import MasterKey
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.store.database import Database
from chamberlain.store.llm_keys import ActiveKey, all_active, keys_version

PREFIX = "chk_"
FULL_RELOAD_INTERVAL = 10.0  # seconds
CLIENT_ID_PREFIX = "virtual-key:"  # what a key's requests carry as their client, in records and rate limits


def new_virtual_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class KeyDigester:
    def __init__(self, master_key: MasterKey) -> None:
        self._key = master_key.derive("llm-virtual-keys")

    def digest(self, presented: str) -> bytes:
        return hmac.new(self._key, presented.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class _Held:
    tenant: str
    expires_at: float | None
    principal: AccessTokenClaims


class VirtualKeys:
    """Digest -> the key's holder, for every tenant; `find` is a dictionary lookup after one HMAC."""

    def __init__(self, master_key: MasterKey, audience_of: Callable[[str], str]) -> None:
        self.digester = KeyDigester(master_key)
        self._audience_of = audience_of  # tenant id -> its LLM resource URL
        self._held: dict[bytes, _Held] = {}
        self._version: tuple[int, float, float] | None = None
        self._loaded_at = 0.0

    def find(self, tenant: str, presented: str) -> AccessTokenClaims | None:
        """The key's holder as a principal, when the key is active and belongs to `tenant`."""
        held = self._held.get(self.digester.digest(presented))
        if held is None or held.tenant != tenant:
            return None
        if held.expires_at is not None and held.expires_at <= time.time():
            return None
        return held.principal

    async def refresh(self, database: Database) -> None:
        version = await keys_version(database)
        now = time.monotonic()
        if version == self._version and now - self._loaded_at < FULL_RELOAD_INTERVAL:
            return
        self._held = {key.digest: self._holder(key) for key in await all_active(database)}
        self._version, self._loaded_at = version, now

    def _holder(self, key: ActiveKey) -> _Held:
        # The request path speaks AccessTokenClaims (policy, vault reads, records): a key stands for its user, with
        # the user's current roles, through a "client" that names the key.
        principal = AccessTokenClaims(
            subject=key.user_id,
            client_id=CLIENT_ID_PREFIX + key.id,
            audience=(self._audience_of(key.tenant_id),),
            scopes=frozenset(),
            expires_at=int(key.expires_at) if key.expires_at is not None else 2**53,
            issued_at=0,
            jti=key.id,
            grant_id=None,
            tenant=key.tenant_id,
            auth_time=None,
            roles=key.roles,
            raw={},
        )
        return _Held(key.tenant_id, key.expires_at, principal)
