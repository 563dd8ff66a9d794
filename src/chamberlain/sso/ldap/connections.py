"""Connections to one directory: TLS verified as HTTPS is, timeouts on every wait, and a small pool of connections
bound as the service account so a sign-in does not pay for a TCP, TLS and bind handshake before its search.

ldap3 is synchronous: everything here runs on a worker thread (sso/ldap/directory.py), and the pool is locked.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ldap3 import NONE, SYNC, Connection, Server, Tls  # type: ignore[import-untyped]
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException  # type: ignore[import-untyped]

from chamberlain.sso.ldap.config import LdapProviderConfig

T = TypeVar("T")


class ServiceBindRefused(Exception):
    """The directory refused the service account's bind (its DN or password is wrong, or it is locked)."""


class _VerifiedTls(Tls):  # type: ignore[misc]
    """ldap3's Tls with the standard library's checks: the chain against the trusted CAs and the server's name
    (RFC 6125) in the handshake, by `ssl.create_default_context` (ldap3's own check goes through
    `ssl.match_hostname`, deprecated and gone in Python 3.12), and TLS 1.2 at least."""

    def __init__(self, context: ssl.SSLContext, hostname: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._hostname = hostname

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake, server_hostname=self._hostname
        )


class Endpoint:
    """How to reach the directory: opens connections, StartTLS done when configured, nothing bound yet."""

    def __init__(self, config: LdapProviderConfig) -> None:
        parts = urlsplit(config.url)
        self._ldaps = parts.scheme == "ldaps"
        self._host = parts.hostname or ""
        self._port = parts.port or (636 if self._ldaps else 389)
        self._start_tls = config.start_tls
        self._timeout = config.timeout
        self._tls: _VerifiedTls | None = None
        if self._ldaps or self._start_tls:
            context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._tls = _VerifiedTls(context, self._host)

    def open(self, user: str, password: str) -> Any:
        """An open connection that has not bound yet (the caller binds as `user`)."""
        # A Server per connection: ldap3 keeps the address in use on the Server, which threads would share.
        server = Server(
            self._host,
            port=self._port,
            use_ssl=self._ldaps,
            tls=self._tls,
            get_info=NONE,  # no root DSE or schema reads: one search and one bind are all a sign-in needs
            connect_timeout=self._timeout,
        )
        connection = Connection(
            server,
            user=user,
            password=password,
            client_strategy=SYNC,
            raise_exceptions=False,  # result codes are read; lost connections and TLS failures still raise
            receive_timeout=self._timeout,
            read_only=True,
            # ldap3 would chase a referral to whatever host it names, binding there with these credentials.
            auto_referrals=False,
        )
        try:
            connection.open(read_server_info=False)
            if self._start_tls:
                connection.start_tls(read_server_info=False)  # RFC 4513 §3: before the bind
        except BaseException:
            discard(connection)
            raise
        return connection


def discard(connection: Any) -> None:
    """Unbinds and closes (RFC 4511 §4.3); a connection that already failed may fail to say goodbye too."""
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()


class ServicePool:
    """Up to `size` idle connections bound as the service account. A connection is used by one thread at a time;
    one that failed is closed, never handed out again."""

    def __init__(self, endpoint: Endpoint, bind_dn: str, size: int) -> None:
        self.endpoint = endpoint
        self._bind_dn = bind_dn
        self._size = size
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._bound_with: str | None = None

    def run(self, bind_password: str, work: Callable[[Any], T]) -> T:
        """`work(connection)` on a bound service connection. When a kept connection turns out dead (the directory
        restarted, or dropped it as idle), the others are as stale: all are dropped and `work` runs once more on a
        new one."""
        connection = self._take(bind_password)
        if connection is None:
            return self._run_on(self._bind(bind_password), bind_password, work)
        try:
            return self._run_on(connection, bind_password, work)
        except LDAPCommunicationError:
            self.close()
        return self._run_on(self._bind(bind_password), bind_password, work)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            discard(connection)

    def _run_on(self, connection: Any, bind_password: str, work: Callable[[Any], T]) -> T:
        try:
            result = work(connection)
        except (LDAPException, OSError):
            discard(connection)  # the connection failed: in no state to be used again
            raise
        except BaseException:
            self._give_back(connection, bind_password)  # the work refused something (a wrong password); still bound
            raise
        self._give_back(connection, bind_password)
        return result

    def _take(self, bind_password: str) -> Any | None:
        with self._lock:
            if bind_password != self._bound_with:
                # The password was rotated in the vault: connections bound with the old one are not reused.
                stale, self._idle, self._bound_with = self._idle, [], bind_password
            else:
                stale = []
            connection = self._idle.pop() if self._idle else None
        for old in stale:
            discard(old)
        return connection

    def _give_back(self, connection: Any, bind_password: str) -> None:
        with self._lock:
            if bind_password == self._bound_with and len(self._idle) < self._size:
                self._idle.append(connection)
                return
        discard(connection)

    def _bind(self, bind_password: str) -> Any:
        connection = self.endpoint.open(self._bind_dn, bind_password)
        try:
            if not connection.bind():
                raise ServiceBindRefused(connection.result.get("description", "bind refused"))
        except BaseException:
            discard(connection)
            raise
        return connection
