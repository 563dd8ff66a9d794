"""The database backend: envelope encryption, one fresh data key per secret version.

Each version's value is encrypted with AES-256-GCM under a data key of its own (256 random bits), with associated
data that names the secret exactly: tenant, source, name and version, each length-prefixed so no two different
tuples encode alike. The data key is wrapped by the key-encryption key (the same associated data) and stored beside
the ciphertext with the KEK's id. So:
- the database alone reveals nothing (the KEK is elsewhere);
- a row copied to another name, source, tenant or version does not decrypt (the associated data differs);
- KEK rotation rewraps data keys (32 bytes each) and never decrypts a value: `rewrap`.

Stored ciphertext: one format byte (1), a 96-bit random nonce, then the GCM ciphertext and tag. A data key encrypts
exactly one message, so even the nonce could be fixed; a random one costs nothing and keeps the format uniform.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chamberlain.store.database import Database
from chamberlain.store.vault import RewrappedKey, StoredVersion, VaultRepository, VersionInfo, tenants_with_secrets
from chamberlain.vault.backend import BackendUnavailable, SecretNotFound, SecretRef, SecretUnreadable, SecretVersion
from chamberlain.vault.kek import KekRing

logger = logging.getLogger(__name__)

CIPHERTEXT_FORMAT = 1
_FORMAT_BYTE = bytes([CIPHERTEXT_FORMAT])
_NONCE_BYTES = 12
_TAG_BYTES = 16
_AAD_LABEL = b"chamberlain.vault.secret.v1"  # domain separation: these bytes mean nothing to any other use
_PUT_ATTEMPTS = 8


def associated_data(ref: SecretRef, version: int) -> bytes:
    """The canonical associated data of one version: each field as a 4-byte big-endian length and its UTF-8 bytes,
    so ("a", "bc") and ("ab", "c") never encode alike."""
    fields = (_AAD_LABEL, ref.tenant.encode(), ref.source.encode(), ref.name.encode(), str(version).encode())
    return b"".join(len(part).to_bytes(4, "big") + part for part in fields)


def seal(value: bytes, data_key: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return _FORMAT_BYTE + nonce + AESGCM(data_key).encrypt(nonce, value, aad)


def unseal(ciphertext: bytes, data_key: bytes, aad: bytes) -> bytes:
    """Raises InvalidTag when the ciphertext, the key or the associated data is not the one sealed."""
    if len(ciphertext) < 1 + _NONCE_BYTES + _TAG_BYTES or ciphertext[:1] != _FORMAT_BYTE:
        raise InvalidTag
    return AESGCM(data_key).decrypt(ciphertext[1 : 1 + _NONCE_BYTES], ciphertext[1 + _NONCE_BYTES :], aad)


@dataclass
class RewrapReport:
    """What a KEK rotation did. Rows it could not rewrap stay as they were (and readable by their old KEK)."""

    kek_id: str
    rewrapped: int = 0
    missing_keks: Counter[str] = field(default_factory=Counter)  # data keys under a KEK the ring does not hold
    unreadable: list[str] = field(default_factory=list)  # "tenant/source/name vN" whose data key did not unwrap

    @property
    def complete(self) -> bool:
        return not self.missing_keks and not self.unreadable


class EnvelopeBackend:
    """SecretBackend over the store's `vault_secret_versions` table."""

    def __init__(self, database: Database, keks: KekRing, *, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._keks = keks
        self._clock = clock

    def __repr__(self) -> str:
        return f"EnvelopeBackend(keks={self._keks!r})"

    @property
    def keks(self) -> KekRing:
        return self._keks

    def _repository(self, tenant: str) -> VaultRepository:
        return VaultRepository(self._database, tenant)

    async def put(self, ref: SecretRef, value: bytes, *, metadata: Mapping[str, str] | None = None) -> SecretVersion:
        repository = self._repository(ref.tenant)
        details = dict(metadata or {})

        async def encrypted(version: int) -> StoredVersion:
            aad = associated_data(ref, version)
            data_key = AESGCM.generate_key(bit_length=256)
            kek = self._keks.current
            return StoredVersion(
                source=ref.source,
                name=ref.name,
                version=version,
                ciphertext=seal(value, data_key, aad),
                wrapped_key=await kek.wrap(data_key, aad),
                kek_id=kek.key_id,
                details=details,
                created_at=self._clock(),
            )

        for attempt in range(_PUT_ATTEMPTS):
            row = await repository.insert_next_version(ref.source, ref.name, encrypted)
            if row is not None:
                return SecretVersion(ref, row.version, row.created_at, details)
            # Another process took the number (and the number is in the associated data): encrypt again for the next.
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 - jitter, not secrecy
        raise BackendUnavailable(f"could not store a new version of {ref}: too many concurrent writers")

    async def get(self, ref: SecretRef, version: int | None = None) -> bytes:
        row = await self._repository(ref.tenant).version(ref.source, ref.name, version)
        if row is None:
            raise SecretNotFound(f"no secret {ref}" + (f" version {version}" if version is not None else ""))
        aad = associated_data(ref, row.version)
        kek = self._keks.get(row.kek_id)
        if kek is None:
            raise SecretUnreadable(
                f"cannot decrypt secret {ref} version {row.version}: its data key is wrapped by key-encryption key "
                f"{row.kek_id}, which is not configured (vault.kek or vault.previous_keks)"
            )
        try:
            data_key = await kek.unwrap(row.wrapped_key, aad)
        except SecretUnreadable:
            raise SecretUnreadable(
                f"cannot decrypt secret {ref} version {row.version}: its data key does not unwrap under "
                f"key-encryption key {row.kek_id} (altered, copied from another secret, or another key)"
            ) from None
        try:
            return unseal(row.ciphertext, data_key, aad)
        except (InvalidTag, ValueError):
            raise SecretUnreadable(
                f"cannot decrypt secret {ref} version {row.version}: the ciphertext was altered or copied from "
                "another secret"
            ) from None

    async def versions(self, ref: SecretRef) -> list[SecretVersion]:
        infos = await self._repository(ref.tenant).versions(ref.source, ref.name)
        return [_version(ref.tenant, info) for info in infos]

    async def list(self, tenant: str, source: str | None = None) -> list[SecretVersion]:
        return [_version(tenant, info) for info in await self._repository(tenant).latest_versions(source)]

    async def delete(self, ref: SecretRef) -> bool:
        return await self._repository(ref.tenant).delete_versions(ref.source, ref.name) > 0

    async def purge(self, ref: SecretRef, *, keep: int) -> int:
        if keep < 1:
            raise ValueError("purge keeps at least the newest version: use delete to remove a secret")
        return await self._repository(ref.tenant).purge_versions(ref.source, ref.name, keep)

    async def rewrap(self, *, batch_size: int = 500, tenants: Iterable[str] | None = None) -> RewrapReport:
        """Rewraps every data key not under the ring's current KEK, unwrapping with whichever KEK of the ring
        wrapped it. Values are never decrypted. Each batch is its own transaction and an update applies only while
        the row still has the data key it read, so an interrupted rotation is finished by running it again, and
        running it twice changes nothing the second time."""
        current = self._keks.current
        report = RewrapReport(current.key_id)
        for tenant in tenants if tenants is not None else await tenants_with_secrets(self._database):
            repository = self._repository(tenant)
            after: tuple[str, str, int] | None = None
            while batch := await repository.wrapped_keys_not_under(current.key_id, after=after, limit=batch_size):
                after = batch[-1].position
                rewrapped: list[RewrappedKey] = []
                for key in batch:
                    ref = SecretRef(tenant, key.source, key.name)
                    kek = self._keks.get(key.kek_id)
                    if kek is None:
                        report.missing_keks[key.kek_id] += 1
                        continue
                    aad = associated_data(ref, key.version)
                    try:
                        data_key = await kek.unwrap(key.wrapped_key, aad)
                    except SecretUnreadable:
                        report.unreadable.append(f"{ref} v{key.version}")
                        continue
                    wrapped = await current.wrap(data_key, aad)
                    rewrapped.append(
                        RewrappedKey(key.source, key.name, key.version, key.kek_id, wrapped, current.key_id)
                    )
                report.rewrapped += await repository.replace_wrapped_keys(rewrapped)
        logger.info("vault: rewrapped %d data keys under key-encryption key %s", report.rewrapped, current.key_id)
        return report


def _version(tenant: str, info: VersionInfo) -> SecretVersion:
    return SecretVersion(SecretRef(tenant, info.source, info.name), info.version, info.created_at, info.details)
