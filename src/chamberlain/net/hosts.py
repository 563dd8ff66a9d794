"""Host names and addresses that stay on this machine."""

from __future__ import annotations

import ipaddress


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
