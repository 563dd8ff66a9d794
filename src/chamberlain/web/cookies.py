"""Cookie names and attributes in one place: `__Host-` prefixed, Secure, HttpOnly and SameSite=Lax under TLS.

RFC 6265bis §4.1.3.2: a `__Host-` cookie must be Secure, have Path=/ and no Domain, which pins it to this origin.
Browsers refuse such cookies over plain http, so on a loopback http issuer (development) the prefix is dropped.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response


class CookiePolicy:
    def __init__(self, *, secure: bool, realm: str | None = None) -> None:
        """`realm` names a tenant other than the default: each tenant's cookies have their own names, so signing
        in to one tenant neither replaces nor vouches for a session in another."""
        self.secure = secure
        self._prefix = ("__Host-chamberlain_" if secure else "chamberlain_") + (f"{realm}_" if realm else "")

    def name(self, short_name: str) -> str:
        return self._prefix + short_name

    def read(self, request: Request, short_name: str) -> str | None:
        return request.cookies.get(self.name(short_name))

    def write(self, response: Response, short_name: str, value: str, *, max_age: int | None) -> None:
        response.set_cookie(
            self.name(short_name),
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
