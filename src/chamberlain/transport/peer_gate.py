"""uvicorn on the Unix socket, with its HTTP protocol started only for a peer the policy admits (SO_PEERCRED is read
in the gate's connection_made, see transport/gate.py, so a refused peer's bytes stay unread in the kernel)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from chamberlain.transport.gate import ConnectionGate, GatedConfig
from chamberlain.transport.unix_socket import PeerCredentials, PeerPolicy, UnixListener, peer_credentials

logger = logging.getLogger(__name__)


class PeerCheckedConfig(GatedConfig):
    """uvicorn's configuration, plus who may connect."""

    def __init__(self, app: ASGIApp, *, peer_policy: PeerPolicy, **options: Any) -> None:
        super().__init__(app, **options)
        self.peer_policy = peer_policy
        self.gate = PeerGate


class PeerGate(ConnectionGate):
    """Admits a peer whose uid or gid the policy lists."""

    _config: PeerCheckedConfig

    def admits(self, transport: asyncio.BaseTransport) -> bool:
        peer = _peer_of(transport)
        if peer is None or not self._config.peer_policy.admits(peer):
            if peer is not None:
                logger.warning(
                    "unix socket connection refused: uid %d gid %d pid %d is not allowed", peer.uid, peer.gid, peer.pid
                )
            return False
        return True


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
