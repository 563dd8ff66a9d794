"""Redirect URI rules: what may be registered, and when a requested redirect URI matches a registered one.

Registration follows RFC 6749 §3.1.2, RFC 8252 §7 (native apps) and RFC 9700 §4.1; matching is the
exact string comparison of OAuth 2.1 §4.1.1 / RFC 9700 §4.1.3, with the single RFC 8252 §7.3 exception
that a loopback redirect URI may carry any port at request time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from chamberlain.oauth.errors import INVALID_REDIRECT_URI, OAuthError

MAX_REDIRECT_URI_LENGTH = 2000

# RFC 3986 §2: the only characters a URI may contain (unreserved, reserved, and "%" for pct-encoding).
# Anything else (whitespace, controls, backslash, non-ASCII) is refused outright: browsers "repair"
# such URIs in ways that differ from our byte comparison, which is how redirect-URI bypasses start.
_URI_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")
_BAD_PERCENT_ENCODING = re.compile(r"%(?![0-9A-Fa-f]{2})")

# RFC 3986 Appendix B: the reference regular expression that splits a URI into its five components.
_URI_COMPONENTS = re.compile(r"^(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$", re.DOTALL)
# RFC 3986 §3.1
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
# RFC 1123 §2.1 host name label (letters, digits, hyphen; no leading or trailing hyphen).
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")

# Schemes that execute or read local content in a user agent; named so the error message is explicit.
_DANGEROUS_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "blob", "about", "filesystem"})
_IPV4_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_IPV6_LOOPBACK = ipaddress.IPv6Address("::1")


@dataclass(frozen=True)
class _Uri:
    scheme: str
    authority: str | None
    path: str
    query: str | None
    fragment: str | None


@dataclass(frozen=True)
class _Authority:
    host: str
    port: str | None


def _reject(problem: str) -> OAuthError:
    return OAuthError(INVALID_REDIRECT_URI, f"redirect URI {problem}")


def _split(uri: str) -> _Uri:
    match = _URI_COMPONENTS.match(uri)
    if match is None or match.group(1) is None:
        # RFC 6749 §3.1.2: the redirection endpoint URI MUST be an absolute URI (RFC 3986 §4.3).
        raise _reject("must be an absolute URI with a scheme")
    scheme, authority, path, query, fragment = match.groups()
    if not _SCHEME.match(scheme):
        raise _reject("has an invalid scheme")
    return _Uri(scheme, authority, path, query, fragment)


def _check_characters(uri: str) -> None:
    for char in uri:
        if char.isspace() or not char.isprintable():
            raise _reject("must not contain whitespace or control characters")
        if char not in _URI_CHARACTERS:
            raise _reject(f"contains a character not allowed in a URI (RFC 3986 §2): {char!r}")
    if _BAD_PERCENT_ENCODING.search(uri):
        raise _reject("contains a malformed percent-encoding")


def _split_authority(authority: str) -> _Authority:
    if "@" in authority:
        # Userinfo lets "https://good.example@evil.example/" look like good.example to a human reader,
        # and RFC 9700 §4.1 warns against anything that lets validation and browser disagree on the host.
        raise _reject("must not contain userinfo ('@' in the authority)")
    if authority.startswith("["):
        host, bracket, rest = authority.partition("]")
        host += bracket
        if not bracket or (rest and not rest.startswith(":")):
            raise _reject("has a malformed IP literal host")
        return _Authority(host, rest[1:] if rest else None)
    host, colon, port = authority.partition(":")
    return _Authority(host, port if colon else None)


def _check_port(port: str | None) -> None:
    if port is None:
        return
    # RFC 3986 §3.2.3 allows an empty port, but nothing good comes from registering one.
    if not port.isdigit() or len(port) > 5 or not 0 < int(port) <= 65535:
        raise _reject("has an invalid port")


def _check_host(host: str) -> None:
    if not host:
        raise _reject("must name a host")
    if host.startswith("["):
        try:
            # RFC 3986 §3.2.2 IP-literal; IPvFuture and zone identifiers (RFC 6874) have no business
            # here, and Python's parser would accept "%zone" as a scope id.
            if "%" in host:
                raise ValueError(host)
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _reject("has an invalid IPv6 literal host") from None
        return
    if len(host) > 253:
        raise _reject("has a host name that is too long")
    labels = host.split(".")
    if not all(_DNS_LABEL.match(label) for label in labels):
        raise _reject("has an invalid host name")
    # WHATWG URL parsing turns hosts ending in a number ("127.1", "0x7f.1") into IPv4 addresses, so
    # a browser would go somewhere other than what the string says; only a plain dotted quad is kept.
    if _NUMERIC_LABEL.match(labels[-1]):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _reject("has a host that is neither a host name nor a dotted-quad IPv4 address") from None


def _is_loopback_host(host: str) -> bool:
    """127.0.0.0/8 literals and [::1] (RFC 8252 §7.3), plus "localhost" (OAuth 2.1 §2.3.1, MCP clients)."""
    if host.lower() == "localhost":
        return True
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1]) == _IPV6_LOOPBACK
        except ValueError:
            return False
    try:
        return ipaddress.IPv4Address(host) in _IPV4_LOOPBACK
    except ValueError:
        return False


def _check_web_uri(parts: _Uri, scheme: str) -> _Authority:
    if parts.authority is None:
        raise _reject(f"must have the form {scheme}://host/path")
    authority = _split_authority(parts.authority)
    _check_host(authority.host)
    _check_port(authority.port)
    if scheme == "http" and not _is_loopback_host(authority.host):
        # RFC 6749 §3.1.2.1: TLS is required, except for the loopback interface, which never leaves
        # the device (RFC 8252 §7.3, §8.3).
        raise _reject("must use https; http is only allowed for loopback (127.0.0.1, [::1], localhost)")
    return authority


def _check_private_use_uri(parts: _Uri) -> None:
    # RFC 8252 §7.1: private-use schemes are reverse domain names (they contain a dot), such as
    # "com.example.app:/oauth2redirect", which keeps them from colliding with or spoofing real schemes.
    if parts.authority is not None and "@" in parts.authority:
        raise _reject("must not contain userinfo ('@' in the authority)")
    if not parts.path and not parts.authority:
        raise _reject("with a private-use scheme must have a path, e.g. com.example.app:/callback")


def validate_redirect_uri(uri: str) -> None:
    """Raise OAuthError(invalid_redirect_uri) unless `uri` may be registered as a redirect URI."""
    if not isinstance(uri, str) or not uri:
        raise _reject("must be a non-empty string")
    if len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise _reject(f"must be at most {MAX_REDIRECT_URI_LENGTH} characters")
    _check_characters(uri)
    parts = _split(uri)
    if parts.fragment is not None:
        # RFC 6749 §3.1.2: the endpoint URI MUST NOT include a fragment component.
        raise _reject("must not contain a fragment ('#')")
    scheme = parts.scheme.lower()
    if scheme in _DANGEROUS_SCHEMES:
        raise _reject(f"must not use the {scheme}: scheme")
    if scheme in ("https", "http"):
        _check_web_uri(parts, scheme)
    elif "." in scheme:
        _check_private_use_uri(parts)
    else:
        raise _reject(
            "must use https, http on loopback, or a private-use scheme in reverse-domain form "
            "(RFC 8252 §7.1, e.g. com.example.app:/callback)"
        )


@dataclass(frozen=True)
class _LoopbackUri:
    scheme: str
    host: str
    path: str
    query: str | None


def _as_loopback(uri: str) -> _LoopbackUri | None:
    """The parts of a valid http loopback URI other than its port, or None for any other URI."""
    try:
        validate_redirect_uri(uri)
    except OAuthError:
        return None
    parts = _split(uri)
    if parts.scheme.lower() != "http" or parts.authority is None:
        return None
    authority = _split_authority(parts.authority)
    if not _is_loopback_host(authority.host):
        return None
    return _LoopbackUri(parts.scheme, authority.host, parts.path, parts.query)


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Whether a redirect URI sent in an authorization request matches one that was registered."""
    # OAuth 2.1 §4.1.1 / RFC 9700 §4.1.3: simple string comparison, no normalisation of any kind.
    if registered == requested:
        return True
    # RFC 8252 §7.3: native apps bind an ephemeral port, so for loopback the port alone may differ.
    # Scheme, host, path and query are still compared exactly, character for character.
    registered_loopback = _as_loopback(registered)
    requested_loopback = _as_loopback(requested)
    return registered_loopback is not None and registered_loopback == requested_loopback
