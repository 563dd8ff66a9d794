"""Signing in with a username and password against a tenant's LDAP directory or Active Directory (ldap3).

1. A connection bound as the service account (its password read from the tenant's vault by the caller; the
   connection kept in a small pool) searches `user_base` with the provider's filter, the typed name escaped as an
   assertion value (RFC 4515 §3). Exactly one entry must match: none, or several, is refused like a wrong password.
2. A simple bind as that entry's DN with the typed password proves it (RFC 4513 §5.1.3), on a connection of its own.
   An empty password is refused before anything is sent: with a DN it would be an unauthenticated bind, which
   servers answer with success (RFC 4513 §5.1.2).
3. The service connection reads the entry's groups, nested ones included (sso/ldap/groups.py).
4. The answer is kept in directory_cache (store/directory_cache.py) for `cache_ttl` seconds. While the directory
   cannot be reached (refused, timed out, connection lost), a person it vouched for within that time signs in with
   the same password and the groups it last reported, marked `ldap-cache`. A directory that answers "invalid
   credentials" is never second-guessed by the cache, and such an answer changes nothing in it.

ldap3 is synchronous, so each sign-in's directory work runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from ldap3 import SUBTREE  # type: ignore[import-untyped]
from ldap3.core.exceptions import (  # type: ignore[import-untyped]
    LDAPCertificateError,
    LDAPCommunicationError,
    LDAPException,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
)
from ldap3.utils.conv import escape_filter_chars  # type: ignore[import-untyped]

from chamberlain.identity.passwords import MAX_LENGTH
from chamberlain.sso.identity import FederatedIdentity, IdentityProviderUnavailable, SignInRefused
from chamberlain.sso.ldap.config import USERNAME_PLACEHOLDER, LdapProviderConfig
from chamberlain.sso.ldap.connections import Endpoint, ServiceBindRefused, ServicePool, discard
from chamberlain.sso.ldap.groups import Group, active_directory_groups, nested_groups
from chamberlain.store.directory_cache import DirectoryCache

logger = logging.getLogger(__name__)

AUTHN_DIRECTORY = "ldap-bind"  # authn_context of a sign-in the directory itself vouched for
AUTHN_CACHE = "ldap-cache"  # ... and of one vouched for by directory_cache while the directory was unreachable
MAX_USERNAME = 256
_USER_ATTRIBUTES = ["mail", "displayName", "cn"]
# Bind results that mean "not this person with this password" (RFC 4511 Appendix A): invalidCredentials,
# insufficientAccessRights, unwillingToPerform (AD: account locked, password expired, logon hours).
_REFUSED_BIND_RESULTS = frozenset({49, 50, 53})
_SUCCESS, _SIZE_LIMIT_EXCEEDED = 0, 4
_PAGED_RESULTS = "1.2.840.113556.1.4.319"  # RFC 2696: groups are read a page at a time (AD answers 1000 at most)
_PAGE_SIZE = 500

INVALID_CREDENTIALS = "The username or password is not correct."
UNREACHABLE = "The company directory cannot be reached right now. Try again in a few minutes."
MISCONFIGURED = "Signing in with the company directory is misconfigured here; tell an administrator."


@dataclass(frozen=True)
class _Person:
    dn: str
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]


class _Unreachable(Exception):
    """The directory did not answer: the cache may vouch instead."""


class _DirectoryError(Exception):
    """The directory answered an operation with an error other than refusing the person."""


class Directory:
    def __init__(self, name: str, config: LdapProviderConfig, cache: DirectoryCache) -> None:
        self.name = name
        self.config = config
        self._cache = cache
        self._pool: ServicePool | None = None
        self._pool_lock = threading.Lock()

    async def authenticate(self, username: str, password: str, *, bind_password: str) -> FederatedIdentity:
        username = username.strip()
        if not username or not password or len(username) > MAX_USERNAME or len(password) > MAX_LENGTH:
            raise SignInRefused("ldap_invalid_credentials", INVALID_CREDENTIALS)
        try:
            person = await asyncio.to_thread(self._sign_in, username, password, bind_password)
        except _Unreachable:
            return await self._from_cache(username, password)
        if self.config.cache_ttl:
            await self._cache.remember(
                self.name, username, password, user_dn=person.dn, email=person.email, groups=person.groups
            )
        return FederatedIdentity(
            provider=self.name,
            subject=person.dn,
            email=person.email,
            display_name=person.display_name,
            groups=person.groups,
            mfa=False,
            authn_context=(AUTHN_DIRECTORY,),
        )

    def close(self) -> None:
        """Unbinds the pooled connections (when the provider is removed or reconfigured); blocking."""
        if self._pool is not None:
            self._pool.close()

    async def _from_cache(self, username: str, password: str) -> FederatedIdentity:
        if self.config.cache_ttl:
            entry = await self._cache.vouched(self.name, username, password, max_age=self.config.cache_ttl)
            if entry is not None:
                age = time.time() - entry.refreshed_at
                logger.info("directory %s unreachable: signed in from what it said %.0f s ago", self.name, age)
                return FederatedIdentity(
                    provider=self.name,
                    subject=entry.user_dn,
                    email=entry.email,
                    display_name=None,
                    groups=entry.groups,
                    mfa=False,
                    authn_context=(AUTHN_CACHE,),
                )
        raise IdentityProviderUnavailable("ldap_unreachable", UNREACHABLE)

    # -- on a worker thread -------------------------------------------------------------------------------------

    def _sign_in(self, username: str, password: str, bind_password: str) -> _Person:
        try:
            pool = self._service_pool()
        except OSError as error:  # the CA file is missing or not PEM certificates
            logger.warning("directory %s: its TLS settings cannot be used (%s)", self.name, type(error).__name__)
            raise IdentityProviderUnavailable("ldap_tls", MISCONFIGURED) from None
        try:
            return pool.run(bind_password, lambda service: self._vouch(service, pool, username, password))
        except ServiceBindRefused:
            logger.warning("directory %s refused the service account's bind", self.name)
            raise IdentityProviderUnavailable("ldap_service_bind", MISCONFIGURED) from None
        except _DirectoryError as error:
            logger.warning("directory %s answered with an error: %s", self.name, error)
            raise IdentityProviderUnavailable("ldap_error", UNREACHABLE) from None
        except (LDAPException, OSError) as error:
            raise self._failure(error) from None

    def _failure(self, error: Exception) -> Exception:
        # TLS first: an LDAPS handshake failure is also a communication error. A certificate that does not verify is
        # a misconfiguration or an attack, not an outage: the cache does not stand in for it.
        if isinstance(error, ssl.SSLError | LDAPStartTLSError | LDAPCertificateError):
            logger.warning("directory %s: TLS failed (%s)", self.name, type(error).__name__)
            return IdentityProviderUnavailable("ldap_tls", UNREACHABLE)
        if isinstance(error, LDAPCommunicationError | LDAPResponseTimeoutError | OSError):
            logger.warning("directory %s unreachable (%s)", self.name, type(error).__name__)
            return _Unreachable()
        logger.warning("directory %s: %s", self.name, type(error).__name__)
        return IdentityProviderUnavailable("ldap_error", UNREACHABLE)

    def _service_pool(self) -> ServicePool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ServicePool(Endpoint(self.config), self.config.bind_dn, self.config.pool_size)
            return self._pool

    def _vouch(self, service: Any, pool: ServicePool, username: str, password: str) -> _Person:
        entry = self._find(service, username)
        if entry is None:
            raise SignInRefused("ldap_invalid_credentials", INVALID_CREDENTIALS)
        self._verify(pool.endpoint, entry["dn"], password)
        groups = self._groups_of(service, entry["dn"])
        return _Person(
            dn=entry["dn"],
            email=_first(entry, "mail"),
            display_name=_first(entry, "displayName") or _first(entry, "cn"),
            groups=groups,
        )

    def _find(self, service: Any, username: str) -> dict[str, Any] | None:
        query = self.config.search_filter.replace(USERNAME_PLACEHOLDER, escape_filter_chars(username))
        # Two at most: enough to tell one match from an ambiguous name.
        service.search(self.config.user_base, query, search_scope=SUBTREE, attributes=_USER_ATTRIBUTES, size_limit=2)
        if service.result["result"] not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise _DirectoryError(f"user search: {service.result.get('description')}")
        entries = _entries(service)
        return entries[0] if len(entries) == 1 else None

    def _verify(self, endpoint: Endpoint, dn: str, password: str) -> None:
        connection = endpoint.open(dn, password)
        try:
            if connection.bind():
                return
            result = connection.result["result"]
        finally:
            discard(connection)
        if result in _REFUSED_BIND_RESULTS:
            raise SignInRefused("ldap_invalid_credentials", INVALID_CREDENTIALS)
        raise _DirectoryError(f"bind: result {result}")

    def _groups_of(self, service: Any, dn: str) -> tuple[str, ...]:
        def search(query: str) -> list[Group]:
            return self._search_groups(service, query)

        walk = active_directory_groups if self.config.active_directory else nested_groups
        groups = walk(search, dn)
        if self.config.group_name == "cn":
            return tuple(sorted({group.cn or group.dn for group in groups}))
        return tuple(sorted(group.dn for group in groups))

    def _search_groups(self, service: Any, query: str) -> list[Group]:
        found: list[Group] = []
        cookie: bytes | None = None
        while True:
            service.search(
                self.config.group_base,
                query,
                search_scope=SUBTREE,
                attributes=["cn"],
                paged_size=_PAGE_SIZE,
                paged_cookie=cookie,
            )
            if service.result["result"] != _SUCCESS:
                raise _DirectoryError(f"group search: {service.result.get('description')}")
            found += [Group(entry["dn"], _first(entry, "cn")) for entry in _entries(service)]
            cookie = service.result.get("controls", {}).get(_PAGED_RESULTS, {}).get("value", {}).get("cookie")
            if not cookie:
                return found


def _entries(connection: Any) -> list[dict[str, Any]]:
    """The entries of the last search (continuation references, which AD sends, left out)."""
    return [item for item in connection.response or () if item.get("type") == "searchResEntry"]


def _first(entry: dict[str, Any], attribute: str) -> str | None:
    values = entry.get("attributes", {}).get(attribute)
    if isinstance(values, list):
        values = values[0] if values else None
    return str(values) if values else None
