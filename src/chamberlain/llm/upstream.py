"""The model API behind the proxy: pooled keep-alive connections per origin, and the tenant's API keys.

Connections come from net/http1.py's pool (the MCP proxy's: a sixth of httpx's CPU per request), one pool per upstream
origin shared by every tenant that names it. API keys are vault secrets of the tenant, bound to the upstream named
LLM_UPSTREAM, read through `Vault.use` (checked, audited with the user and request that caused the read) by the
gateway's VaultHeader, which keeps a value VAULT_VALUE_TTL seconds (one read at a time however many requests wait):
the request path normally costs a dictionary lookup for it, and a rotated or unbound key stops being sent within
that time.
"""

from __future__ import annotations

import ssl
import time
from urllib.parse import urlsplit

import certifi

from chamberlain.gateway.server_config import split_vault_reference
from chamberlain.gateway.upstream_credentials import VaultAccess, VaultHeader
from chamberlain.net.http1 import Http1Pool
from chamberlain.store.servers import LLM_BINDING
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.service import Vault

LLM_UPSTREAM = LLM_BINDING  # the upstream name LLM API keys are bound to in the vault (`--bind llm`)
API_KEY_HEADER = "x-api-key"  # how the Anthropic API takes its key
# Idle connections are dropped before a typical keep-alive timeout would drop them under a request (a POST is never
# retried on a fresh connection: the model may have started).
IDLE_TIMEOUT = 4.0


class LlmUpstream:
    """One upstream base URL (`llm.upstream_url`): its pool and the path its endpoints sit under."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        tls = ssl.create_default_context(cafile=certifi.where()) if parts.scheme == "https" else None
        self.pool = Http1Pool(f"{parts.scheme}://{parts.netloc}", ssl_context=tls, idle_timeout=IDLE_TIMEOUT)
        self.prefix = parts.path.rstrip("/")

    async def aclose(self) -> None:
        await self.pool.aclose()


class ApiKeys:
    """The vault headers of every tenant's configured keys, one per (tenant, key reference)."""

    def __init__(self) -> None:
        self._headers: dict[tuple[str, str], VaultHeader] = {}

    def header(self, vault: Vault, tenant: str, reference: str) -> VaultHeader:
        key = (tenant, reference)
        found = self._headers.get(key)
        if found is None:
            source, name = split_vault_reference(reference)
            access = VaultAccess(vault, tenant, LLM_UPSTREAM)
            found = VaultHeader(API_KEY_HEADER, SecretRef(tenant, source, name), access, time.monotonic)
            self._headers[key] = found
        return found

    async def keep_only(self, configured: set[tuple[str, str]]) -> None:
        """Forgets the keys no tenant configures any more (their cached values with them)."""
        for key in set(self._headers) - configured:
            await self._headers.pop(key).aclose()

    async def aclose(self) -> None:
        await self.keep_only(set())
