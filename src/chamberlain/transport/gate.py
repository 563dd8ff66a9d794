"""A gate in front of uvicorn's HTTP protocol: each accepted connection is admitted or closed before a byte is read.

uvicorn builds one `config.http_protocol_class(config=, server_state=, app_state=, _loop=)` per accepted connection.
`GatedConfig` puts its gate class in that place: the gate's connection_made decides, then either closes the
transport or hands it to uvicorn's own protocol (transport.set_protocol). The event loop starts reading only after
connection_made returns, and never on a closed transport, so a refused peer's bytes stay unread. Over TLS, asyncio
and uvloop call connection_made once the handshake has completed, so the peer's certificate is known there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import uvicorn


class GatedConfig(uvicorn.Config):
    """uvicorn's configuration whose protocol class becomes `gate` in front of the one uvicorn chose."""

    gate: type[ConnectionGate]
    admitted_protocol: Callable[..., asyncio.Protocol]  # the HTTP protocol uvicorn chose, set by load()

    def load(self) -> None:
        super().load()
        self.admitted_protocol = self.http_protocol_class
        self.http_protocol_class = self.gate


class ConnectionGate(asyncio.Protocol):
    """Admits or closes one connection; an admitted one is uvicorn's from then on."""

    def __init__(self, config: GatedConfig, **arguments: Any) -> None:
        self._config = config
        self._arguments = arguments

    def admits(self, transport: asyncio.BaseTransport) -> bool:
        """Whether this connection may be served; logs why not. Must fail closed on anything unexpected."""
        raise NotImplementedError

    def admitted(self, protocol: asyncio.Protocol, transport: asyncio.BaseTransport) -> None:
        """Called with uvicorn's protocol for an admitted connection before it sees the transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.admits(transport):
            transport.close()
            return
        protocol = self._config.admitted_protocol(config=self._config, **self._arguments)
        self.admitted(protocol, transport)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
