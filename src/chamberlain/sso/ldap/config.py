"""An LDAP or Active Directory directory of a tenant (`sso.providers.NAME` with `kind: ldap`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chamberlain.sso.common_config import ProviderBase


class LdapProviderConfig(ProviderBase):
    kind: Literal["ldap"] = "ldap"
    url: str = Field(min_length=1, max_length=2000)  # ldap://host:port (with start_tls) or ldaps://host:port
    bind_dn: str = Field(min_length=1, max_length=1000)
    bind_password: str  # a vault reference "SOURCE/NAME" in this tenant, bound to the vault upstream "sso"
    user_base: str = Field(min_length=1, max_length=1000)
    group_base: str = Field(min_length=1, max_length=1000)
