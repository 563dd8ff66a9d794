"""Finding a client by its id: a registered one in the store, or a Client ID Metadata Document fetched by URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chamberlain.oauth.client_metadata import ClientMetadata, parse_client_metadata
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.store.clients import ClientRepository, Registration

# Shorter than any access token's life (at least 30 s), so a revocation entry always outlives a cached copy.
CACHE_SECONDS = 30.0
MAX_CACHED_CLIENTS = 10_000


@dataclass(frozen=True)
class Client:
    client_id: str
    metadata: ClientMetadata
    registration: Registration
    secret_hash: bytes | None

    @property
    def display_name(self) -> str:
        return self.metadata.client_name or self.client_id


class MetadataDocumentResolver(Protocol):
    def accepts(self, client_id: str) -> bool: ...

    async def resolve(self, client_id: str) -> ClientMetadata: ...


class ClientDirectory:
    """Registered clients are remembered for a short while, so the token endpoint does not read and re-validate
    the same registration on every request. A revoked client is refused at once all the same: revocation reaches
    every process through the revocation list, whose entry outlives any cached copy."""

    def __init__(
        self,
        tenant_id: str,
        repository: ClientRepository,
        documents: MetadataDocumentResolver,
        revocations: RevocationList,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tenant_id = tenant_id
        self._repository = repository
        self._documents = documents
        self._revocations = revocations
        self._clock = clock
        self._cache: dict[str, tuple[float, Client]] = {}

    async def find(self, client_id: str) -> Client | None:
        """None for unknown or revoked clients. A metadata document that cannot be fetched raises OAuthError."""
        if self._revocations.client_revoked(self._tenant_id, client_id):
            return None
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        client = await self._load(client_id)
        if client is not None and client.registration != "metadata_document":
            if len(self._cache) >= MAX_CACHED_CLIENTS:
                self._cache.clear()
            self._cache[client_id] = (self._clock() + CACHE_SECONDS, client)
        return client

    async def _load(self, client_id: str) -> Client | None:
        record = await self._repository.get(client_id)
        if record is not None and record.revoked_at is not None:
            return None
        if self._documents.accepts(client_id):
            metadata = await self._documents.resolve(client_id)
            if record is None or record.client_metadata != metadata.to_dict():
                await self._repository.upsert_metadata_document(client_id, metadata.to_dict())
            return Client(client_id, metadata, "metadata_document", None)
        if record is None:
            return None
        return Client(client_id, parse_client_metadata(record.client_metadata), record.registration, record.secret_hash)
