"""Host names and addresses that stay on this machine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def origin(url: str) -> str:
    """The origin of an absolute URL as browsers send it in `Origin` (RFC 6454 §6.2): scheme://host[:port]."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def is_loopback_host(host: str | None) -> bool:
    """True for `localhost` and loopback IP literals (127.0.0.0/8, ::1); never resolves a name."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_off_machine_url(url: str, *, query: bool = True) -> str:
    """An absolute http(s) URL fit to carry something secret or decisive off this machine: https, except on
    loopback; no user information (RFC 3986 §3.2.1 deprecates it); no fragment (nor a query, unless `query`).
    Raises ValueError saying what is wrong, for configuration validators."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
        raise ValueError("must be an absolute http(s) URL without user information")
    if parts.fragment or (parts.query and not query):
        raise ValueError("must not have a query or a fragment" if not query else "must not have a fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("must use https (plain http is allowed only on loopback)")
    return url
