"""CSRF protection for the login and consent forms: tokens bound to a browser cookie and to what the form does.

The token is an HMAC over the cookie's random value and the form's purpose and subject (for consent: the session
and the exact authorization request), so a token taken from one form cannot be replayed on another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.web.cookies import CookiePolicy

COOKIE = "csrf"


class CsrfProtection:
    def __init__(self, key: bytes, cookies: CookiePolicy) -> None:
        self._key = key
        self._cookies = cookies

    def browser_value(self, request: Request) -> tuple[str, bool]:
        """The cookie's value, and whether it is new (then `set_cookie` must be called on the response)."""
        existing = self._cookies.read(request, COOKIE)
        if existing and len(existing) == 43:
            return existing, False
        return secrets.token_urlsafe(32), True

    def token(self, browser_value: str, purpose: str, subject: str) -> str:
        message = "\x00".join((browser_value, purpose, subject)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def check(self, request: Request, submitted: str | None, purpose: str, subject: str) -> bool:
        browser_value = self._cookies.read(request, COOKIE)
        if not browser_value or not submitted:
            return False
        return hmac.compare_digest(self.token(browser_value, purpose, subject), submitted)

    def set_cookie(self, response: Response, browser_value: str) -> None:
        self._cookies.write(response, COOKIE, browser_value, max_age=None)
