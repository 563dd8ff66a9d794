"""uvicorn on the Unix socket, with its HTTP protocol started only for a peer the policy admits.

uvicorn builds one `config.http_protocol_class(config=, server_state=, app_state=, _loop=)` per accepted connection.
`PeerCheckedConfig` puts `PeerGate` in that place: its connection_made reads SO_PEERCRED and either closes the
transport or hands it to uvicorn's own protocol. The event loop starts reading only after connection_made returns,
and never on a closed transport, so a refused peer's bytes stay unread in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from chamberlain.transport.unix_socket import PeerCredentials, PeerPolicy, UnixListener, peer_credentials

logger = logging.getLogger(__name__)


class PeerCheckedConfig(uvicorn.Config):
    """uvicorn's configuration, plus who may connect; its protocol class becomes the gate in front of uvicorn's."""

    admitted_protocol: Callable[..., asyncio.Protocol]  # the HTTP protocol uvicorn chose, set by load()

    def __init__(self, app: ASGIApp, *, peer_policy: PeerPolicy, **options: Any) -> None:
        super().__init__(app, **options)
        self.peer_policy = peer_policy

    def load(self) -> None:
        super().load()
        self.admitted_protocol = self.http_protocol_class
        self.http_protocol_class = PeerGate


class PeerGate(asyncio.Protocol):
    """Admits or closes one connection; an admitted one is uvicorn's from then on (transport.set_protocol)."""

    def __init__(self, config: PeerCheckedConfig, **arguments: Any) -> None:
        self._config = config
        self._arguments = arguments

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = _peer_of(transport)
        if peer is None or not self._config.peer_policy.admits(peer):
            if peer is not None:
                logger.warning(
                    "unix socket connection refused: uid %d gid %d pid %d is not allowed", peer.uid, peer.gid, peer.pid
                )
            transport.close()
            return
        protocol = self._config.admitted_protocol(config=self._config, **self._arguments)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


def _peer_of(transport: asyncio.BaseTransport) -> PeerCredentials | None:
    """None (and so refused) when the kernel cannot say who connected: the check fails closed."""
    sock = transport.get_extra_info("socket")
    try:
        return peer_credentials(sock)
    except (OSError, AttributeError) as problem:
        logger.warning("unix socket connection refused: its peer credentials are unreadable (%s)", problem)
        return None


class UnixSocketServer(uvicorn.Server):
    """uvicorn serving a UnixListener behind the peer check, until SIGINT, SIGTERM or should_exit."""

    def __init__(self, app: ASGIApp, listener: UnixListener, policy: PeerPolicy, **options: Any) -> None:
        super().__init__(PeerCheckedConfig(app, peer_policy=policy, **options))
        self.listener = listener

    def serve_forever(self) -> None:
        self.run(sockets=[self.listener.socket])

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Once stopped, uvicorn re-raises the signal that stopped it with the default handler back in place, which
        # ends the process before any caller's cleanup runs: the socket file must go first.
        with super().capture_signals():
            try:
                yield
            finally:
                self.listener.close()
