"""An LDAP or Active Directory directory of a tenant (`sso.providers.NAME` with `kind: ldap`).

```yaml
corp:
  kind: ldap
  url: ldaps://dc1.corp.example:636       # or ldap://...:389 with start_tls: true
  bind_dn: CN=chamberlain,OU=Service,DC=corp,DC=example
  bind_password: sso/ad                   # vault reference SOURCE/NAME
  user_base: OU=People,DC=corp,DC=example
  group_base: OU=Groups,DC=corp,DC=example
  active_directory: true                  # sAMAccountName / userPrincipalName, nested groups in one query
  group_name: cn                          # report groups by their cn instead of their DN
  cache_ttl: 28800                        # seconds a directory that is down still lets in people it vouched for
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from chamberlain.gateway.server_config import VaultReference
from chamberlain.net.hosts import is_loopback_host
from chamberlain.sso.common_config import ProviderBase

USERNAME_PLACEHOLDER = "{username}"
# Whoever the person types: their uid or their email (OpenLDAP's inetOrgPerson), their sAMAccountName or their
# userPrincipalName (AD). AD's filter also leaves out disabled accounts (userAccountControl bit 2, ACCOUNTDISABLE,
# matched with LDAP_MATCHING_RULE_BIT_AND 1.2.840.113556.1.4.803).
OPENLDAP_USER_FILTER = "(|(uid={username})(mail={username}))"
ACTIVE_DIRECTORY_USER_FILTER = (
    "(&(objectCategory=person)(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2))"
    "(|(sAMAccountName={username})(userPrincipalName={username})(mail={username})))"
)


class LdapProviderConfig(ProviderBase):
    kind: Literal["ldap"] = "ldap"
    url: str = Field(min_length=1, max_length=2000)  # ldap://host:port (with start_tls) or ldaps://host:port
    bind_dn: str = Field(min_length=1, max_length=1000)
    bind_password: VaultReference  # "SOURCE/NAME" in this tenant's vault, bound to the vault upstream "sso"
    user_base: str = Field(min_length=1, max_length=1000)
    group_base: str = Field(min_length=1, max_length=1000)
    # The StartTLS extended operation (RFC 4511 §4.14) on an ldap:// URL, before anything is sent.
    start_tls: bool = False
    # PEM certificates to trust for this directory instead of the system's; certificates are always verified.
    ca_file: Path | None = None
    # The search for the person signing in; {username} is replaced by what they typed, escaped (RFC 4515 §3).
    user_filter: str | None = Field(None, min_length=1, max_length=2000)
    # Active Directory: its user filter, and nested groups with LDAP_MATCHING_RULE_IN_CHAIN in one query.
    active_directory: bool = False
    group_name: Literal["dn", "cn"] = "dn"  # how groups are reported to the group mapping
    timeout: int = Field(10, ge=1, le=120)  # seconds to connect, and to wait for each answer
    # Seconds a directory that cannot be reached still lets in someone it vouched for (with the same password and
    # the groups it last reported); 0 keeps nothing about anyone.
    cache_ttl: int = Field(8 * 3600, ge=0, le=30 * 86400)
    pool_size: int = Field(4, ge=1, le=64)  # service-account connections kept bound between sign-ins

    @model_validator(mode="after")
    def _protected_url(self) -> Self:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("url must be ldap://host[:port] or ldaps://host[:port]")
        if parts.scheme == "ldaps" and self.start_tls:
            raise ValueError("start_tls is for ldap:// URLs; an ldaps:// connection is already TLS")
        # Passwords go to the directory in a simple bind (RFC 4513 §5.1.3): never in the clear off this machine.
        if parts.scheme == "ldap" and not self.start_tls and not is_loopback_host(parts.hostname):
            raise ValueError("ldap:// sends passwords in the clear: use ldaps:// or start_tls: true")
        if self.user_filter is not None and not _filter_shaped(self.user_filter):
            raise ValueError(f"user_filter must be a parenthesised LDAP filter containing {USERNAME_PLACEHOLDER}")
        return self

    @property
    def search_filter(self) -> str:
        """The user filter in force, with its {username} placeholder."""
        if self.user_filter is not None:
            return self.user_filter
        return ACTIVE_DIRECTORY_USER_FILTER if self.active_directory else OPENLDAP_USER_FILTER


def _filter_shaped(value: str) -> bool:
    """One parenthesised filter (RFC 4515 §2): its parentheses balance, and only the last one closes the first."""
    depth = 0
    for position, char in enumerate(value):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or (depth == 0 and position < len(value) - 1):
            return False
    return value.startswith("(") and depth == 0 and USERNAME_PLACEHOLDER in value
