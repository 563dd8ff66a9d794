"""Personal fields, encrypted under a key per data subject, so that deleting the key erases them (crypto-shredding).

The chain covers the ciphertext, not the plaintext: after a subject's key is destroyed their personal fields are
unreadable everywhere (database, backups, exports that carried only ciphertext) and every hash still verifies.
Subject keys are 256-bit AES-GCM keys, stored encrypted under the master key with (tenant, subject) as associated
data; each event's ciphertext has the event id as associated data, so it cannot be moved to another event.
"""

from __future__ import annotations

import os
import time

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import and_, insert, select, update

from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import Connection
from chamberlain.store.schema import audit_subject_keys

_NONCE = 12


class SubjectKeys:
    """Per-subject keys of one store; decrypted keys are cached (a shredded subject is remembered as None), and so
    are the AES-GCM contexts made from them (making one costs as much as the encryption)."""

    def __init__(self, master_key: MasterKey) -> None:
        self._master_key = master_key
        self._cache: dict[tuple[str, str], bytes | None] = {}
        self._ciphers: dict[bytes, AESGCM] = {}

    async def keys(
        self, connection: Connection, tenant: str, subjects: set[str], *, create: bool
    ) -> dict[str, bytes | None]:
        """Keys for these subjects; with `create`, a missing subject gets a new key in the caller's transaction."""
        found: dict[str, bytes | None] = {}
        missing = []
        for subject in subjects:
            cached = self._cache.get((tenant, subject), b"")
            if cached == b"":
                missing.append(subject)
            else:
                found[subject] = cached
        if missing:
            rows = await connection.execute(
                select(audit_subject_keys.c.subject, audit_subject_keys.c.key).where(
                    and_(audit_subject_keys.c.tenant_id == tenant, audit_subject_keys.c.subject.in_(missing))
                )
            )
            for row in rows.all():
                subject, wrapped = row.subject, row.key
                found[subject] = self._unwrap(tenant, subject, wrapped) if wrapped is not None else None
            new = [subject for subject in missing if subject not in found] if create else []
            if new:
                now = time.time()
                new_rows = []
                for subject in new:
                    key = AESGCM.generate_key(bit_length=256)
                    wrapped = self._master_key.encrypt(key, _subject_ad(tenant, subject))
                    new_rows.append({"tenant_id": tenant, "subject": subject, "key": wrapped, "created_at": now})
                    found[subject] = key
                await connection.execute(insert(audit_subject_keys), new_rows)
        return found

    def cipher(self, key: bytes) -> AESGCM:
        """The AES-GCM context of a subject key, made once."""
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = AESGCM(key)
        return cipher

    def remember(self, tenant: str, keys: dict[str, bytes | None]) -> None:
        """Caches keys once the transaction that read or created them committed."""
        for subject, key in keys.items():
            self._cache[(tenant, subject)] = key

    async def shred(self, connection: Connection, tenant: str, subject: str) -> bool:
        """Destroys the subject's key. True when there was a key to destroy."""
        result = await connection.execute(
            update(audit_subject_keys)
            .where(
                audit_subject_keys.c.tenant_id == tenant,
                audit_subject_keys.c.subject == subject,
                audit_subject_keys.c.key.is_not(None),
            )
            .values(key=None, shredded_at=time.time())
        )
        key = self._cache.get((tenant, subject))
        if key:
            self._ciphers.pop(key, None)
        self._cache[(tenant, subject)] = None
        return result.rowcount > 0

    def _unwrap(self, tenant: str, subject: str, wrapped: bytes) -> bytes:
        return self._master_key.decrypt(wrapped, _subject_ad(tenant, subject))


def encrypt_personal(key: bytes, event_id: str, personal: dict[str, str]) -> bytes:
    return seal_personal(AESGCM(key), event_id, personal)


def seal_personal(cipher: AESGCM, event_id: str, personal: dict[str, str]) -> bytes:
    """encrypt_personal with the subject key's AES-GCM context already made (`SubjectKeys.cipher`)."""
    nonce = os.urandom(_NONCE)
    plaintext = orjson.dumps(personal, option=orjson.OPT_SORT_KEYS)
    return nonce + cipher.encrypt(nonce, plaintext, event_id.encode())


def decrypt_personal(key: bytes | None, event_id: str, ciphertext: bytes) -> dict[str, str] | None:
    """The personal fields, or None when the key is gone (shredded) or the ciphertext was tampered with."""
    if key is None:
        return None
    try:
        plaintext = AESGCM(key).decrypt(ciphertext[:_NONCE], ciphertext[_NONCE:], event_id.encode())
    except InvalidTag:
        return None
    document: dict[str, str] = orjson.loads(plaintext)
    return document


def _subject_ad(tenant: str, subject: str) -> bytes:
    return b"audit-subject\x00" + tenant.encode() + b"\x00" + subject.encode()
