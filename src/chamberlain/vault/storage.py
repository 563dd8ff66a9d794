"""Where the vault keeps its values, as `vault:` configures it: opened the same way by the gateway and the CLI, so
both read and write the same place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chamberlain.crypto.master_key import MasterKey
from chamberlain.settings import Settings
from chamberlain.store.database import Database
from chamberlain.vault.backend import SecretBackend
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, load_kek_ring

if TYPE_CHECKING:
    from chamberlain.vault.openbao import OpenBaoConnection


@dataclass
class VaultStorage:
    """Where the vault keeps its values, as configured, and the key-encryption keys in use."""

    backend: SecretBackend
    keks: KekRing
    connection: OpenBaoConnection | None = None  # OpenBao's: its token is renewed until `aclose`

    async def aclose(self) -> None:
        if self.connection is not None:
            await self.connection.close()  # revokes its token unless vault.openbao.revoke_token_on_close is false


async def open_vault_storage(settings: Settings, database: Database, master_key: MasterKey) -> VaultStorage:
    """The vault's backend as `vault:` configures it, for the gateway and for anything else that must read and write
    the same place (the CLI): the envelope store in the database under the configured KEK ring (by default derived
    from the master key), or with `vault.openbao` OpenBao's KV v2, its token checked and its lease kept alive, and
    its transit key as the current KEK (the local KEKs kept for unwrapping what they wrapped)."""
    keks = load_kek_ring(settings.vault, data_dir=settings.data_dir, master_key=master_key)
    configured = settings.vault.openbao
    if configured is None:
        return VaultStorage(EnvelopeBackend(database, keks), keks)
    from chamberlain.vault.openbao import OpenBaoBackend, OpenBaoConnection, TransitKek  # hvac: only when used

    connection = await OpenBaoConnection.open(configured)
    try:
        transit = await TransitKek.open(connection)
    except BaseException:
        await connection.close()
        raise
    return VaultStorage(OpenBaoBackend(connection), keks.with_current(transit), connection)
