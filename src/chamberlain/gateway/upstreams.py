"""One live `Upstream` per registered server, rebuilt when its configuration changes and closed when it goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from chamberlain.gateway.http_upstream import HttpUpstream
from chamberlain.gateway.server_config import ServerConfig
from chamberlain.gateway.stdio_upstream import StdioUpstream
from chamberlain.gateway.upstream import Upstream
from chamberlain.gateway.upstream_credentials import UpstreamCredentials, VaultAccess
from chamberlain.store.servers import Server

logger = logging.getLogger(__name__)
RETIRE_AFTER = 60.0  # seconds an upstream replaced by a new configuration keeps serving requests already under way

CredentialsFactory = Callable[[str, ServerConfig], UpstreamCredentials]  # (server name, its configuration)
VaultFactory = Callable[[str], VaultAccess]  # how a server reaches the vault (TLS client certificates, CAs)


class UpstreamRegistry:
    def __init__(self, builtin: Upstream, credentials: CredentialsFactory, vaults: VaultFactory | None = None) -> None:
        self._builtin = builtin
        self._credentials = credentials
        self._vaults = vaults
        self._live: dict[str, tuple[ServerConfig, Upstream]] = {}
        self._retiring: dict[asyncio.Task[None], Upstream] = {}

    def upstream(self, server: Server) -> Upstream:
        config = server.config
        if config is None:
            return self._builtin
        live = self._live.get(server.name)
        if live is not None and (live[0] is config or live[0] == config):
            return live[1]
        upstream: Upstream
        if config.command is not None:
            upstream = StdioUpstream(server.name, config)
        else:
            vault = self._vaults(server.name) if self._vaults is not None else None
            upstream = HttpUpstream(server.name, config, self._credentials(server.name, config), vault)
        self._live[server.name] = (config, upstream)
        if live is not None:
            self._retire(live[1])
        return upstream

    def keep_only(self, names: set[str]) -> None:
        """Closes the upstreams of servers that are no longer registered."""
        for name in [name for name in self._live if name not in names]:
            self._retire(self._live.pop(name)[1])

    async def aclose(self) -> None:
        retiring, self._retiring = self._retiring, {}
        for task in retiring:
            task.cancel()
        live, self._live = self._live, {}
        for upstream in [*retiring.values(), *(upstream for _, upstream in live.values())]:
            await _close_quietly(upstream)

    def _retire(self, upstream: Upstream) -> None:
        async def retire() -> None:
            await asyncio.sleep(RETIRE_AFTER)
            await _close_quietly(upstream)

        task = asyncio.create_task(retire())
        self._retiring[task] = upstream
        task.add_done_callback(lambda done: self._retiring.pop(done, None))


async def _close_quietly(upstream: Upstream) -> None:
    with contextlib.suppress(Exception):
        await upstream.aclose()
