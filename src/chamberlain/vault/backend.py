"""What every vault storage backend implements: versioned secrets addressed by (tenant, source, name).

A namespace is one (tenant, source) pair: a source is an upstream system (a Confluence site, a GitHub org, a
database). Backends never see who asks; the Vault service (access checks, bindings, audit) sits in front of them.
Values are bytes and never appear in exceptions, reprs or logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-128 of letters, digits, '.', '_' and '-'")
    return value


@dataclass(frozen=True, slots=True)
class SecretRef:
    tenant: str
    source: str
    name: str

    def __post_init__(self) -> None:
        check_name(self.source, "source")
        check_name(self.name, "secret name")

    def __str__(self) -> str:
        return f"{self.tenant}/{self.source}/{self.name}"


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """Metadata of one stored version: never the value."""

    ref: SecretRef
    version: int  # 1, 2, ...: each put makes the next
    created_at: float
    metadata: Mapping[str, str] = field(default_factory=dict)  # kind, owner, scopes, ... (not secret)


class VaultError(Exception):
    """Base of every vault failure. Messages name the secret's reference, never its value."""


class SecretNotFound(VaultError):
    pass


class SecretUnreadable(VaultError):
    """The stored bytes do not decrypt: tampered ciphertext, associated data that does not match, or a wrong KEK."""


class BackendUnavailable(VaultError):
    """The backend (database, OpenBao, OS keychain) cannot be reached or refused the operation."""


class SecretBackend(Protocol):
    async def put(self, ref: SecretRef, value: bytes, *, metadata: Mapping[str, str] | None = None) -> SecretVersion:
        """Stores a new version; earlier versions stay readable (rollback) until purged."""

    async def get(self, ref: SecretRef, version: int | None = None) -> bytes:
        """The latest (or the given) version's value. Raises SecretNotFound or SecretUnreadable."""

    async def versions(self, ref: SecretRef) -> list[SecretVersion]:
        """Every version still kept, oldest first; empty when there is no such secret."""

    async def list(self, tenant: str, source: str | None = None) -> list[SecretVersion]:
        """The latest version of every secret of the tenant (or of one of its sources)."""

    async def delete(self, ref: SecretRef) -> bool:
        """Removes the secret and all its versions; False when there was none."""

    async def purge(self, ref: SecretRef, *, keep: int) -> int:
        """Drops all but the newest `keep` versions; how many were dropped."""


class KeyEncryptionKey(Protocol):
    """Wraps the per-secret data keys (envelope encryption). Implementations: a key from a file, an environment
    variable or the OS keyring (AES-256-GCM key wrap with associated data), or a KMS-style service (OpenBao
    transit), where the key never leaves the service."""

    @property
    def key_id(self) -> str:
        """Stable id stored beside each wrapped data key, so rotation knows which data keys to rewrap."""

    async def wrap(self, data_key: bytes, associated_data: bytes) -> bytes: ...

    async def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        """Raises SecretUnreadable when the wrapped key or its associated data was altered, or it is not ours."""
