"""The `vault:` section of chamberlain.yaml: where the key-encryption key comes from, and how old each kind of
credential may grow before `chamberlain vault audit --rotation-check` lists it.

The default KEK is derived from the master key (HKDF, label "vault-kek"), so a fresh install needs nothing new. To
keep the KEK apart from the master key, point `vault.kek` at a file, an environment variable or the OS keyring.
KEK rotation: add the new source as `kek`, move the old one to `previous_keks` (still unwrapping), then run
`chamberlain vault rotate-kek`, which rewraps every data key under the new KEK; then drop the old one.

`vault.openbao` moves the secrets to OpenBao (or HashiCorp Vault): KV version 2 holds them and the transit key
becomes the key-encryption key (vault/openbao.py); unset, they stay envelope-encrypted in the database.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chamberlain.vault.openbao_settings import OpenBaoSettings

DAY = 86_400.0
DEFAULT_KEK_VARIABLE = "CHAMBERLAIN_VAULT_KEK"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CredentialKind(StrEnum):
    API_KEY = "api_key"
    CLIENT_SECRET = "client_secret"
    REFRESH_TOKEN = "refresh_token"
    PASSWORD = "password"
    HEADER = "header"  # a static header value (a bearer token, a basic credential)
    CONNECTION = "connection"  # a connection URL with its credentials (the admin connection a rotation uses)


# Days before a credential is due for rotation. NIST SP 800-57 Part 1 Rev. 5 §5.3 bounds the cryptoperiod of
# symmetric authentication keys; PCI DSS v4.0 8.6.3 asks that application and system account passwords change
# periodically. 90 days for what a person or a script could have copied (API keys, passwords, header values), 180
# for client secrets and connection URLs. Refresh tokens have none: the upstream sets their lifetime, and a revoked
# one marks its credential unhealthy ("re-consent needed") instead.
DEFAULT_MAX_AGE_DAYS: dict[CredentialKind, int | None] = {
    CredentialKind.API_KEY: 90,
    CredentialKind.CLIENT_SECRET: 180,
    CredentialKind.REFRESH_TOKEN: None,
    CredentialKind.PASSWORD: 90,
    CredentialKind.HEADER: 90,
    CredentialKind.CONNECTION: 180,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KekSource(_Model):
    """Where one key-encryption key (256 bits) is loaded from."""

    type: Literal["master_key", "file", "env", "keyring"] = "master_key"
    # master_key: the HKDF label; another label is another KEK (rotation without a new file).
    label: str = Field("vault-kek", min_length=1, max_length=200)
    # file: base64url of 32 bytes, mode 0600; a relative path is relative to the data directory.
    path: Path | None = None
    # env: base64url of 32 bytes in this environment variable.
    variable: str = DEFAULT_KEK_VARIABLE
    # keyring: the OS keyring entry (base64url of 32 bytes) under this service and user name.
    service: str = Field("chamberlain", min_length=1)
    username: str = Field("vault-kek", min_length=1)

    @field_validator("variable")
    @classmethod
    def _variable_name(cls, value: str) -> str:
        if not _VARIABLE.fullmatch(value):
            raise ValueError("must be an environment variable name (letters, digits and '_')")
        return value

    @model_validator(mode="after")
    def _file_has_a_path(self) -> KekSource:
        if self.type == "file" and self.path is None:
            raise ValueError("a file KEK needs `path`")
        return self

    def describe(self) -> str:
        """Where the key comes from, for messages (never the key)."""
        if self.type == "master_key":
            return f"derived from the master key (label {self.label!r})"
        if self.type == "file":
            return f"file {self.path}"
        if self.type == "env":
            return f"environment variable {self.variable}"
        return f"OS keyring entry {self.service}/{self.username}"


class VaultSettings(_Model):
    kek: KekSource = KekSource()
    # Older KEKs, still used to unwrap the data keys they wrapped until `vault rotate-kek` has rewrapped them all.
    previous_keks: tuple[KekSource, ...] = ()
    # Days a credential of each kind may live (null: no limit); a credential's own --max-age wins.
    max_age_days: dict[CredentialKind, int | None] = Field(default_factory=lambda: dict(DEFAULT_MAX_AGE_DAYS))
    rewrap_batch_size: int = Field(500, ge=1, le=100_000, description="data keys rewrapped per transaction")
    # Where OpenBao is and how the gateway authenticates (its token from the environment or a file, never here).
    openbao: OpenBaoSettings | None = None

    @field_validator("max_age_days")
    @classmethod
    def _defaults_for_kinds_not_given(cls, value: dict[CredentialKind, int | None]) -> dict[CredentialKind, int | None]:
        for kind, days in value.items():
            if days is not None and not 1 <= days <= 36_500:
                raise ValueError(f"{kind}: days must be between 1 and 36500, or null for no limit")
        return {**DEFAULT_MAX_AGE_DAYS, **value}

    def max_age_for(self, kind: CredentialKind) -> float | None:
        """Seconds a credential of this kind may live by default; None when unlimited."""
        days = self.max_age_days.get(kind)
        return None if days is None else days * DAY
