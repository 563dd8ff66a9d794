"""Cookie names and attributes in one place: `__Host-` prefixed, Secure, HttpOnly and SameSite=Lax under TLS.

RFC 6265bis §4.1.3.2: a `__Host-` cookie must be Secure, have Path=/ and no Domain, which pins it to this origin.
Browsers refuse such cookies over plain http, so on a loopback http issuer (development) the prefix is dropped.
"""

from __future__ import annotations

from typing import Literal

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

    def write(
        self, response: Response, short_name: str, value: str, *, max_age: int | None, cross_site_post: bool = False
    ) -> None:
        """`cross_site_post`: the cookie must come back on a POST another site's page makes (a SAML response posted
        by the IdP), which SameSite=Lax withholds; such cookies are SameSite=None, which browsers take only with
        Secure (RFC 6265bis §5.6.19), so over plain http (loopback development) they stay Lax."""
        same_site: Literal["lax", "none"] = "none" if cross_site_post and self.secure else "lax"
        response.set_cookie(
            self.name(short_name),
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite=same_site,
        )
