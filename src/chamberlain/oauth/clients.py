"""Finding a client by its id: a registered one in the store, or a Client ID Metadata Document fetched by URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chamberlain.oauth.client_metadata import ClientMetadata, parse_client_metadata
from chamberlain.store.clients import ClientRepository, Registration


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
    def __init__(self, repository: ClientRepository, documents: MetadataDocumentResolver) -> None:
        self._repository = repository
        self._documents = documents

    async def find(self, client_id: str) -> Client | None:
        """None for unknown or revoked clients. A metadata document that cannot be fetched raises OAuthError."""
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
