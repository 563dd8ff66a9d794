"""MCP sessions are never authentication: the session id a client sees is bound to who opened it.

Legacy revisions (2025-06-18, 2025-11-25) let the upstream mint `Mcp-Session-Id`. The client gets that id with a
MAC over (tenant, server, user, client) appended, so a session id presented with anyone else's token is refused
without any shared table: every replica can check it, and nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from chamberlain.oauth.access_tokens import AccessTokenClaims

_SEPARATOR = "~"


class SessionBinder:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def bind(self, upstream_session_id: str, server: str, principal: AccessTokenClaims) -> str:
        return upstream_session_id + _SEPARATOR + self._mac(upstream_session_id, server, principal)

    def unbind(self, presented: str, server: str, principal: AccessTokenClaims) -> str | None:
        """The upstream's session id, or None when the id was not issued to this principal for this server."""
        upstream_session_id, separator, mac = presented.rpartition(_SEPARATOR)
        if not separator or not upstream_session_id:
            return None
        if not hmac.compare_digest(mac, self._mac(upstream_session_id, server, principal)):
            return None
        return upstream_session_id

    def _mac(self, upstream_session_id: str, server: str, principal: AccessTokenClaims) -> str:
        bound = "\x00".join((principal.tenant, server, principal.subject, principal.client_id, upstream_session_id))
        digest = hmac.new(self._key, bound.encode(), hashlib.sha256).digest()[:16]  # 128 bits
        # The transport requires visible ASCII (0x21-0x7E) in session ids: base64url without padding is.
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
